"""lmpretrain: pretraining scripts for BERT, ELECTRA, RoBERTa and causal LMs, with MeCab-first Japanese support."""

__version__ = "0.1.0"
