"""Hub names where a model or tokenizer dir is named: ``org/name`` or ``org/name@revision`` resolved to its local
snapshot through huggingface_hub (its cache under ``HF_HOME``, downloading unless ``HF_HUB_OFFLINE=1``).

A path that exists, or a name that cannot be a hub repo id (absolute, ``./x``, several slashes, a file name), is
returned as given, so that the caller's own check names it; a hub name that is neither cached nor reachable is one
error.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .log import get_logger

logger = get_logger(__name__)


def hub_name(name: str) -> tuple[str, str | None] | None:
    """(repo id, revision) when ``name`` can be a hub model name (and is no existing path), else None."""
    if not name or Path(name).exists() or name.startswith((".", "/", "~")) or name.endswith((".txt", ".model",
                                                                                             ".json")):
        return None
    repo_id, _, revision = name.partition("@")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, revision or None


def local_dir(name: str | None, flag: str) -> str | None:
    """``name`` as a local dir: itself when it is a path (or None), a hub name's cached snapshot otherwise."""
    if name is None:
        return None
    found = hub_name(str(name))
    if found is None:
        return name
    repo_id, revision = found
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision}" if revision else ""
    try:
        path = snapshot_download(repo_id, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise UserError(f"{flag} {name}: not a directory, and the hub has no model {repo_id}{at} (or it is private "
                        f"or gated: log in with `hf auth login`)") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            why = "the hub is offline (HF_HUB_OFFLINE=1)"
        else:
            why = "the hub cannot be reached"
        raise UserError(f"{flag} {name}: not a directory, and the hub model {repo_id}{at} is not found locally and "
                        f"{why}; download it where there is a network (hf download {repo_id}) into the cache of "
                        f"HF_HOME ({constants.HF_HUB_CACHE}), or give a local dir") from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise UserError(f"{flag} {name}: not a directory, and the hub model {repo_id}{at} cannot be fetched "
                        f"({error.__class__.__name__}: {error})") from None
    logger.info("%s %s: the hub snapshot %s", flag, name, path)
    return path


def tokenizer_location(name: str | None, flag: str) -> str | None:
    """A tokenizer as the original's ``--tokenizer_name_or_path`` names it: a dir, its ``vocab.txt`` or SentencePiece
    ``*.model`` (the dir holding it), or a hub name (its cached snapshot); any other file is returned as given."""
    if name is not None and Path(name).is_file() and (Path(name).name == "vocab.txt" or name.endswith(".model")):
        return str(Path(name).parent)
    return local_dir(name, flag)
