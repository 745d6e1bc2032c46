"""The dataset cache: tokenize once, reuse while the inputs are the same, rebuild (saying why) when they change.

A cache lives in ``<cache_dir>/<corpus name>-<key>/`` where the key hashes the corpus and tokenizer *paths* (as
given: a corpus directory, not the files found in it), so the same inputs always find the same place. Inside, the
manifest records the fingerprint of what the shards were built from: the sha256 of every corpus file's bytes (always
hashed; no size/mtime shortcut), the tokenizer's fingerprint, the cache format version and every caller option that
changes the tokens. A cache whose fingerprint differs is rebuilt with a message naming what changed;
``overwrite=False`` (``--disable_overwrite_cache``) reuses whatever complete cache is there.

Every reuse also verifies the contents (``TokenShards.verify``: each file's CRC-32 recorded at build, every id below
the tokenizer's vocabulary size): a damaged cache is rebuilt with a warning, or refused with one error under
``overwrite=False``; never trained on. A cache from before checksums were recorded (format 1) is rebuilt once, saying
so; under ``overwrite=False`` it is used after its ids are range-checked, with a warning.

Builds go to a temporary directory renamed into place once the manifest is written, so an interrupted build never
looks complete. In a multi-process job one process builds (holding a lock file) and the others poll the shared
filesystem for the finished manifest; no torch collective is open while they wait.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import UserError
from ..fsutil import process_is_running, replace_dir
from ..log import get_logger
from .corpus import CorpusPosition, compression_of, corpus_fingerprint, iter_chunks, resolve_corpus_files
from .shards import FORMAT_VERSION, MANIFEST, CacheInvalid, TokenShards, write_shards

logger = get_logger(__name__)

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
LOCK_LOG_EVERY_S = 60.0  # a builder waiting on another's lock says so when it starts waiting and this often after


def default_encoder_factory(tokenizer_dir: str, num_workers: int = 1):
    from ..tokenization import FastEncoder

    return FastEncoder.from_pretrained(tokenizer_dir, num_workers=num_workers)


def cache_location(cache_dir: str | os.PathLike, files: Sequence[str | os.PathLike],
                   tokenizer_dir: str | os.PathLike) -> Path:
    """Where the cache for these corpus paths (files or directories, as given) and this tokenizer lives.

    A function of the paths only: a file added to a corpus directory finds the same cache, which is then rebuilt
    with a message naming the new file (rather than leaving the old cache behind under another name).
    """
    key = json.dumps({"corpus": [str(Path(f).resolve()) for f in files],
                      "tokenizer": str(Path(tokenizer_dir).resolve())})
    stem = Path(files[0]).name.split(".")[0] or "corpus"
    if Path(files[0]).parent.name and stem in {"train", "eval", "valid", "test", "corpus"}:
        stem = f"{Path(files[0]).parent.name}-{stem}"
    return Path(cache_dir) / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def fingerprint_components(files: Sequence[Path], tokenizer_fingerprint: str, extra: dict | None,
                           corpus: list[dict] | None = None) -> dict:
    """``corpus``: the files' ``corpus_fingerprint`` when the caller has it already (not hashed twice)."""
    return {"format_version": FORMAT_VERSION, "corpus": corpus if corpus is not None else corpus_fingerprint(files),
            "tokenizer": str(tokenizer_fingerprint), "options": dict(extra or {})}


def fingerprint_of(components: dict) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


def describe_changes(old: dict | None, new: dict) -> str:
    """A human sentence naming what differs between the fingerprint components of two builds."""
    if not old:
        return "the cache records no inputs"
    changes = []
    if old.get("format_version") == 1 and new["format_version"] == 2:
        changes.append("it was built by an earlier version, without content checksums (cache format 1 -> 2): it is "
                       "rebuilt once, so that its contents are verified on every reuse from now on")
    elif old.get("format_version") != new["format_version"]:
        changes.append(f"the cache format changed ({old.get('format_version')} -> {new['format_version']})")
    old_files = {f["path"]: f for f in old.get("corpus", [])}
    new_files = {f["path"]: f for f in new["corpus"]}
    for path in new_files.keys() - old_files.keys():
        changes.append(f"corpus file {path} was added")
    for path in old_files.keys() - new_files.keys():
        changes.append(f"corpus file {path} was removed")
    for path in new_files.keys() & old_files.keys():
        if new_files[path]["sha256"] != old_files[path]["sha256"]:
            changes.append(f"the content of corpus file {path} changed")
    if [f["path"] for f in old.get("corpus", [])] != [f["path"] for f in new["corpus"]] and not changes:
        changes.append("the order of the corpus files changed")
    if old.get("tokenizer") != new["tokenizer"]:
        changes.append("the tokenizer changed (its files or settings differ from those the cache was built with)")
    old_options, new_options = old.get("options", {}), new["options"]
    for key in sorted(set(old_options) | set(new_options)):
        if old_options.get(key) != new_options.get(key):
            changes.append(f"option {key} changed ({old_options.get(key)!r} -> {new_options.get(key)!r})")
    return "; ".join(changes) or "its fingerprint differs"


def _open_cache(location: Path) -> TokenShards:
    try:
        return TokenShards(location)
    except CacheInvalid:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CacheInvalid(f"it cannot be read ({error})") from None


def build_or_load_dataset(corpus_paths: Sequence[str] | str, tokenizer_dir: str | os.PathLike,
                          cache_dir: str | os.PathLike, *, num_workers: int = 1, overwrite: bool = True,
                          extra_fingerprint: dict | None = None, wait_timeout_s: float = 3600,
                          is_builder: bool = True, encoder_factory: Callable | None = None,
                          text_field: str = "text", chunk_chars: int = 1 << 18,
                          poll_interval_s: float = 1.0, min_bytes_per_worker: int = 4 << 20,
                          files_fingerprint: list[dict] | None = None,
                          builder_done: Callable[[Path], bool] | None = None,
                          unseen_timeout_s: float = 120.0) -> TokenShards:
    """Return the token shards of ``corpus_paths`` tokenized with ``tokenizer_dir``, building the cache if needed.

    ``overwrite=False`` is ``--disable_overwrite_cache``: reuse a complete cache as it is (its contents verified),
    without checking its inputs. ``is_builder=False`` waits (up to ``wait_timeout_s``) for another process to
    finish the cache.
    ``encoder_factory(tokenizer_dir, num_workers=1)`` makes an encoder with FastEncoder's API (the default
    constructs ``FastEncoder``); it must be picklable when ``num_workers > 1``. A corpus of fewer than
    ``min_bytes_per_worker`` bytes per worker gets fewer workers: starting one costs about a second.
    ``files_fingerprint``: :func:`~lmpretrain.data.corpus.corpus_fingerprint` of the corpus, when the caller has
    computed it already (the run compares it with its checkpoint's): then the files are not hashed again.
    ``builder_done(location)`` (a waiter) asks whether the builder has said the cache is complete: a waiter that
    still does not see it ``unseen_timeout_s`` after that stops with an error (a node-local ``--cache_dir``)
    instead of waiting ``wait_timeout_s``.
    """
    files = resolve_corpus_files(corpus_paths)
    factory = encoder_factory or default_encoder_factory
    given = [corpus_paths] if isinstance(corpus_paths, (str, os.PathLike)) else list(corpus_paths)
    location = cache_location(cache_dir, given, tokenizer_dir)
    extra = dict(extra_fingerprint or {})
    extra.setdefault("text_field", text_field)

    encoder = factory(str(tokenizer_dir), num_workers=1)
    try:
        if not overwrite:
            try:
                shards = _open_cache(location)
                shards.verify(encoder.vocab_size)
                if not shards.has_checksums:
                    logger.warning("reusing the dataset cache %s as it is (--disable_overwrite_cache): it was built "
                                   "by an earlier version without content checksums, so only its sizes, offsets and "
                                   "id range were checked; run once without --disable_overwrite_cache to rebuild it "
                                   "with checksums", location)
                else:
                    logger.info("reusing the dataset cache %s as it is (--disable_overwrite_cache; contents verified, "
                                "not checked against the corpus and tokenizer)", location)
                return shards
            except CacheInvalid as why:
                if location.exists():
                    raise UserError(f"--disable_overwrite_cache: the dataset cache {location} is unusable ({why}); "
                                    f"run without --disable_overwrite_cache to rebuild it") from None
            if not is_builder:
                return _wait_for_cache(location, None, wait_timeout_s, poll_interval_s, builder_done,
                                       unseen_timeout_s, encoder.vocab_size)

        components = fingerprint_components(files, encoder.fingerprint, extra, files_fingerprint)
        fingerprint = fingerprint_of(components)
        if not is_builder:
            return _wait_for_cache(location, fingerprint, wait_timeout_s, poll_interval_s, builder_done,
                                   unseen_timeout_s, encoder.vocab_size)
        with _BuildLock(location, wait_timeout_s, poll_interval_s), _FailureNote(location, fingerprint):
            try:
                shards = _open_cache(location)
                if shards.fingerprint == fingerprint:
                    try:
                        shards.verify(encoder.vocab_size)
                    except CacheInvalid as why:
                        raise CacheInvalid(f"its contents are damaged and it is rebuilt from the corpus: {why}") \
                            from None
                    logger.info("reusing the dataset cache %s (%d documents, %d tokens): corpus, tokenizer and "
                                "options unchanged, contents verified", location, shards.num_documents,
                                shards.num_tokens)
                    return shards
                reason = describe_changes(shards.manifest.get("components"), components)
                del shards
                logger.warning("rebuilding the dataset cache %s, which no longer matches its inputs: %s", location,
                               reason)
            except CacheInvalid as why:
                log = logger.info if not location.exists() else logger.warning
                log("building the dataset cache %s: %s", location, why)
            _build(files, location, components, fingerprint, encoder=encoder, factory=factory,
                   tokenizer_dir=str(tokenizer_dir), chunk_chars=chunk_chars,
                   num_workers=_useful_workers(files, num_workers, min_bytes_per_worker),
                   text_field=text_field)
    finally:
        close = getattr(encoder, "close", None)
        if close is not None:
            close()
    return _open_cache(location)


def _useful_workers(files: Sequence[Path], num_workers: int, min_bytes_per_worker: int) -> int:
    if num_workers <= 1 or min_bytes_per_worker <= 0:
        return max(1, num_workers)
    total = sum(Path(f).stat().st_size * (3 if compression_of(f) else 1) for f in files)
    return int(max(1, min(num_workers, total // min_bytes_per_worker)))


def _build(files, location: Path, components: dict, fingerprint: str, *, encoder, factory, tokenizer_dir: str,
           num_workers: int, chunk_chars: int, text_field: str) -> None:
    temporary = location.with_name(f".{location.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    started = time.perf_counter()
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        position = CorpusPosition()
        chunks = iter_chunks(files, chunk_chars=chunk_chars, text_field=text_field,
                             long_line_bytes=getattr(encoder, "max_line_bytes", None), position=position,
                             nul_ends_line=bool(getattr(encoder, "ends_lines_at_nul", False)))
        counts = write_shards(chunks, temporary, encoder=encoder, encoder_factory=factory,
                              tokenizer_dir=tokenizer_dir, num_workers=num_workers,
                              desc=f"tokenizing {Path(files[0]).name}", position=position)
        if counts["num_tokens"] == 0:
            raise UserError(f"the corpus {', '.join(map(str, files))} has no text (no tokens after tokenization)")
        manifest = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "components": components,
                    **counts, "build_seconds": round(time.perf_counter() - started, 3)}
        manifest_tmp = temporary / f"{MANIFEST}.tmp"
        manifest_tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.replace(manifest_tmp, temporary / MANIFEST)
        replace_dir(temporary, location)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if error.errno in _NO_SPACE:
            raise UserError(f"no space left on the device holding the dataset cache {location.parent} while building "
                            f"it; free space or choose another --cache_dir (the partial cache was removed)") from None
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise UserError(f"cannot write the dataset cache in {location.parent} ({error.strerror}); "
                            f"choose a writable --cache_dir") from None
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("built the dataset cache %s: %d documents, %d sentences, %d tokens (%s) from %d characters in %.1f s "
                "(%d tokenizing process%s)", location, counts["num_documents"], counts["num_sentences"],
                counts["num_tokens"], counts["dtype"], counts["num_characters"], time.perf_counter() - started,
                num_workers, "es" if num_workers > 1 else "")


def _failure_path(location: Path) -> Path:
    return location.with_name(f".{location.name}.failed")


class _FailureNote:
    """Leaves a note beside the cache when the build fails, so that waiting processes stop at once with its reason."""

    def __init__(self, location: Path, fingerprint: str):
        self.path = _failure_path(location)
        self.fingerprint = fingerprint

    def __enter__(self) -> _FailureNote:
        self.path.unlink(missing_ok=True)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            try:
                note = {"fingerprint": self.fingerprint, "error": str(error) or kind.__name__, "time": time.time()}
                self.path.write_text(json.dumps(note), encoding="utf-8")
            except OSError:
                pass


def _builder_failure(location: Path, fingerprint: str | None, since: float) -> str | None:
    """The reason a build of this fingerprint failed after ``since`` (wall clock), if a note says so."""
    try:
        note = json.loads(_failure_path(location).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if note.get("time", 0) < since or (fingerprint is not None and note.get("fingerprint") != fingerprint):
        return None
    return note.get("error")


def _wait_for_cache(location: Path, fingerprint: str | None, timeout_s: float, poll_interval_s: float,
                    builder_done: Callable[[Path], bool] | None = None, unseen_timeout_s: float = 120.0,
                    vocab_size: int | None = None) -> TokenShards:
    """Poll the filesystem until the builder's cache (with this fingerprint, or any when None) is complete and its
    contents verify (``vocab_size``: the tokenizer's; a damaged one is what the builder is replacing); at most
    ``timeout_s``, and at most ``unseen_timeout_s`` after ``builder_done`` says the builder has finished it."""
    deadline = time.monotonic() + timeout_s
    done_since = None
    since = time.time() - 120  # a failure of this job's builder, not one left by an older run
    logged = False
    damaged = None  # the manifest (inode, mtime) of a cache found damaged: not verified again until it changes
    while True:
        try:
            shards = _open_cache(location)
            if fingerprint is None or shards.fingerprint == fingerprint:
                if vocab_size is None:
                    return shards
                seen = (location / MANIFEST).stat()
                if damaged != (seen.st_ino, seen.st_mtime_ns):
                    try:
                        shards.verify(vocab_size)
                        return shards
                    except CacheInvalid:
                        damaged = (seen.st_ino, seen.st_mtime_ns)
        except (CacheInvalid, OSError):
            pass
        failure = _builder_failure(location, fingerprint, since)
        if failure is not None:
            raise UserError(f"the process building the dataset cache {location} failed: {failure}")
        if done_since is None and builder_done is not None and builder_done(location):
            done_since = time.monotonic()
        if done_since is not None and time.monotonic() - done_since >= unseen_timeout_s:
            raise UserError(f"rank 0 has finished the dataset cache {location}, but this process still does not see "
                            f"it {unseen_timeout_s:g} s later (--peer_timeout): --cache_dir {location.parent} is not "
                            f"shared by all nodes; point every node at a shared one, or build it on each node first "
                            f"with --build_dataset_only")
        if time.monotonic() >= deadline:
            raise UserError(f"dataset cache at {location} not complete after {timeout_s:g} s; did the building "
                            f"process (rank 0) die? Check its log; if --cache_dir is not on a filesystem shared by "
                            f"all nodes, point it at one, or build first with --build_dataset_only")
        if not logged:
            logger.warning("waiting for rank 0 to build the dataset cache %s (up to %g s while it builds, and "
                           "%g s once it has finished)", location, timeout_s, unseen_timeout_s)
            logged = True
        time.sleep(poll_interval_s)


class _BuildLock:
    """An exclusive lock file next to the cache so that two builders never write it at once.

    A lock left by a dead process on this host is taken over; one from another host is waited on until timeout.
    """

    def __init__(self, location: Path, timeout_s: float, poll_interval_s: float, log_every_s: float | None = None):
        self.path = location.with_name(f".{location.name}.lock")
        self.location = location
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.log_every_s = LOCK_LOG_EVERY_S if log_every_s is None else log_every_s
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self) -> _BuildLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create the cache directory {self.path.parent} ({error.strerror})") from None
        started = time.monotonic()
        deadline = started + self.timeout_s
        next_log = started
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w") as handle:
                    handle.write(self.owner)
                self._remove_dead_builds()
                return self
            except FileExistsError:
                if self._holder_is_dead():
                    logger.warning("removing the stale lock %s left by a build that died", self.path)
                    self.path.unlink(missing_ok=True)
                    continue
            except OSError as error:
                raise UserError(f"cannot write in the cache directory {self.path.parent} ({error.strerror}); "
                                f"choose a writable --cache_dir") from None
            now = time.monotonic()
            if now >= deadline:
                raise UserError(f"dataset cache at {self.location} is locked by another build ({self.path}) after "
                                f"{self.timeout_s:g} s; if no build is running, delete the lock file")
            if now >= next_log:
                self._say_waiting(now - started, first=next_log == started)
                next_log = now + self.log_every_s
            time.sleep(self.poll_interval_s)

    def _say_waiting(self, waited_s: float, first: bool) -> None:
        """Who holds the lock and how to clear it if stale: when the wait starts and every ``log_every_s``."""
        try:
            holder = self.path.read_text().split()
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return  # released meanwhile
        host, pid = (holder + ["?", "?"])[:2]
        if host == socket.gethostname():
            who = f"process {pid} on this host ({host}), which is running"
        else:
            who = (f"process {pid} on host {host}, which this host cannot check: if that build is not running any "
                   f"more (the job was killed), delete {self.path}")
        logger.warning("%s the dataset cache %s: another build holds its lock %s (taken %.0f s ago) - %s; waiting "
                       "up to %g s in all (%.0f s so far)", "waiting to build" if first else "still waiting to build",
                       self.location, self.path, age, who, self.timeout_s, waited_s)

    def _holder_is_dead(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return False
        if host != socket.gethostname() or not pid.isdigit():
            return False
        return not process_is_running(int(pid))

    def _remove_dead_builds(self) -> None:
        # with the lock held, any temporary build of this cache is from a process that died mid-build
        for stale in self.location.parent.glob(f".{self.location.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.location.parent.glob(f".{self.location.name}.old-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


