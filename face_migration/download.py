"""`download`: fetch the model files that shipped workflows need into the folders ComfyUI reads, verified.

Nothing in the pack calls this: it runs only when a user types the command. Every file, from the Hugging
Face Hub or elsewhere (facexlib's GitHub release assets), is fetched with `requests` into a hidden staging
folder beside its destination, as <name>.part with what identifies those bytes recorded beside it (the
Hub's X-Linked-Etag and X-Repo-Commit, or the server's ETag). A cut connection is retried; what was fetched
stays there when the retries give up, the command is interrupted or another file fails, and the next run
continues it with a Range request, unless the file changed upstream (then it starts again from 0). The
file is checked against the catalogue's size and SHA-256 and only then renamed onto its real name: an
interrupted, refused or wrong download never leaves a file under the name the loaders read, and a file
already there that is not known to be wrong is never overwritten."""
from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import requests

from .catalog import CATALOGUE, Catalogue, ModelFile, find_in_folders
from .check_models import (FolderMap, HashCache, Progress, add_folder_arguments, examine, human_size,
                           looks_like_page, other_file_of_size, resolve_folders, workflow_needs)
from .errors import FaceMigrationError

STAGING = ".face_migration_download"  # beside the destination, so the final rename stays on one disk
CHUNK = 1 << 20
TIMEOUT_S = 30
RETRIES = 4  # a cut connection is tried again this many times in one run, each continuing where it stopped
RETRY_WAIT_S = 2.0  # times the attempt number
MAX_REDIRECTS = 10
EXIT_INTERRUPTED = 130
HUB = "https://huggingface.co"


class DownloadError(FaceMigrationError):
    """A model file that could not be fetched; the message names the file, the reason and the fix."""


class AccessDeniedError(DownloadError):
    """The server refused the file (401/403): a gated repository without a token or accepted licence."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the published file (size or SHA-256); nothing was kept."""


class DiskFullError(DownloadError):
    """Not enough free space for the file, found before or while writing it."""


class ConnectionCut(requests.ConnectionError):
    """The server stopped sending before the end of the file (retried; never shown as such)."""


@dataclass
class Job:
    model: ModelFile
    target: str  # where the file goes (its real name)
    replaces: str | None  # what is wrong with the file now there, when it is replaced
    keep_as: str | None = None  # where the file now there is kept: it is another catalogue file, misnamed


def plan(models: list[ModelFile], folders: FolderMap, cache: HashCache, verify: bool, err,
         catalogue: Catalogue = CATALOGUE) -> tuple[list[Job], list[tuple[ModelFile, str]]]:
    """(files to fetch, files already in place with their path). A file found under an accepted name that
    is not known to be wrong (check_models.examine: size, page, SHA-256 where computed or `verify`) is in
    place; a wrong one is replaced where it is (where ComfyUI finds it)."""
    jobs, present = [], []
    for model in models:
        path = find_in_folders(model, folders.roots(model.folder))
        problem = examine(path, model, cache, verify, err, catalogue)[0] if path else None
        if path and not problem:
            present.append((model, path))
        elif path:
            twin = other_file_of_size(model, os.path.getsize(path), catalogue)
            keep_as = os.path.join(os.path.dirname(path), twin.filename) if twin and twin.folder == model.folder \
                else None
            jobs.append(Job(model, path, problem, keep_as if keep_as and not os.path.exists(keep_as) else None))
        else:
            target = os.path.join(folders.download_root(model.folder), model.subdirs[0], model.filename)
            jobs.append(Job(model, target, None))
    return jobs, present


class Partial:
    """The bytes of one file fetched so far (<staging>/<name>.part) and what identifies them (<name>.part.json:
    the URL, the ETag of the content, the Hub's commit), so a later run appends only to the same bytes."""

    def __init__(self, staging: str, filename: str):
        self.path = os.path.join(staging, filename + ".part")
        self.record_path = self.path + ".json"

    def size(self) -> int:
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def identity(self) -> dict | None:
        try:
            with open(self.record_path, encoding="utf-8") as stream:
                return dict(json.load(stream))
        except (OSError, ValueError, TypeError):
            return None

    def begin(self, identity: dict) -> None:
        """Start the file again from byte 0, recording whose bytes follow."""
        with open(self.record_path, "w", encoding="utf-8") as stream:
            json.dump(identity, stream)
        open(self.path, "wb").close()

    def discard(self) -> None:
        for path in (self.path, self.record_path):
            if os.path.exists(path):
                os.remove(path)


@dataclass
class Source:
    url: str
    headers: dict[str, str]
    token_origin: str | None = None  # "HF_TOKEN" or the login's token file, for the refusal message
    hub: bool = False


def hub_token() -> tuple[str | None, str | None]:
    """(token, where it came from): HF_TOKEN, else the token the Hugging Face login saved (`hf auth login`,
    `huggingface-cli login`) where huggingface_hub keeps it (HF_TOKEN_PATH, else $HF_HOME/token)."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"], "HF_TOKEN"
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    path = os.path.expanduser(os.environ.get("HF_TOKEN_PATH") or os.path.join(home, "token"))
    try:
        with open(path, encoding="utf-8") as stream:
            token = stream.read().strip()
    except OSError:
        return None, None
    return (token, path) if token else (None, None)


def source_of(model: ModelFile) -> Source:
    hub_file = model.hub_file()
    if hub_file is None:
        return Source(model.source_url, {})
    repo, revision, path = hub_file
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    token, origin = hub_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Source(f"{endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}", headers, origin, hub=True)


def fetch(job: Job, cache: HashCache, out, err) -> None:
    """Download, verify and atomically put one file in place; raises DownloadError (or KeyboardInterrupt)
    with nothing left under the real name and the bytes fetched so far kept for the next run."""
    model = job.model
    folder = os.path.dirname(job.target)
    staging = os.path.join(folder, STAGING)
    os.makedirs(staging, exist_ok=True)
    partial = Partial(staging, model.filename)
    _check_free_space(model, folder, partial.size())
    try:
        _download(model, partial, err)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"The disk holding {folder} is full: {model.filename} "
                                f"({human_size(model.size_bytes or 0)}) did not fit. Free some space and run the "
                                f"command again: it continues where it stopped.") from exc
        raise
    try:
        _verify(model, partial.path, cache, err)
    except ChecksumError:
        partial.discard()  # wrong bytes: nothing there is worth resuming from (other files' parts stay)
        _remove_if_empty(staging)
        raise
    if job.keep_as:
        os.replace(job.target, job.keep_as)
        out.write(f"  kept the file that was there as {job.keep_as}\n")
    os.replace(partial.path, job.target)
    partial.discard()
    _remove_if_empty(staging)
    if model.sha256:  # so `check-models --verify` need not read it again
        cache.record(job.target, model.sha256)
    out.write(f"  saved {job.target}\n")


def _remove_if_empty(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError:  # another file's partial download is still there
        pass


def _check_free_space(model: ModelFile, folder: str, fetched: int) -> None:
    free, needed = shutil.disk_usage(folder).free, (model.size_bytes or 0) - fetched
    if needed > free:
        raise DiskFullError(f"{model.filename} needs {human_size(needed)} more but {folder} has "
                            f"{human_size(free)} free. Free some space (or put the folder on another disk through "
                            f"extra_model_paths.yaml) and run the command again.")


def _download(model: ModelFile, partial: Partial, err) -> None:
    """Fetch the file into the partial, continuing what is there, retrying a cut connection."""
    source = source_of(model)
    progress = Progress(model.filename, err, verb="downloading")
    started, first = time.monotonic(), partial.size()
    if first and first == model.size_bytes and partial.identity():  # all there: stopped while verifying
        return

    received, last = 0, first  # bytes this run received, for the speed (the file may start again from 0)

    def report(done: int, total: int) -> None:
        nonlocal received, last
        received, last = received + max(done - last, 0), done
        rate = received / max(time.monotonic() - started, 1e-3)
        progress(min(done / max(total, 1), 1.0), f"{human_size(done)} of {human_size(total)}, {human_size(rate)}/s")

    for attempt in range(1, RETRIES + 2):
        try:
            _transfer(model, source, partial, report, err)
            return
        except requests.RequestException as exc:
            if not _worth_retrying(exc):
                raise DownloadError(f"{model.filename} could not be downloaded from {model.source_url}: {exc}. "
                                    f"Check the address (and HF_ENDPOINT if set) and run the command again.") from exc
            kept = partial.size()
            if attempt > RETRIES:
                raise DownloadError(f"{model.filename} could not be downloaded from {model.source_url}: the "
                                    f"connection failed {attempt} times (last: {exc}). {human_size(kept)} of it is "
                                    f"kept in {os.path.dirname(partial.path)}; run the command again: it continues "
                                    f"where it stopped.") from exc
            wait = RETRY_WAIT_S * attempt
            err.write(f"\n  connection lost ({exc}); trying again in {wait:.0f} s from {human_size(kept)}\n")
            time.sleep(wait)


def _worth_retrying(exc: requests.RequestException) -> bool:
    """A cut or refused connection, a timeout, or a server error that may pass (5xx, 429)."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
        return True
    status = getattr(exc.response, "status_code", None) or 0
    return status >= 500 or status == 429


def _transfer(model: ModelFile, source: Source, partial: Partial, report, err) -> None:
    """One request: append to the partial when the server sends the same file from where it stops, else
    write the file from byte 0."""
    kept, recorded = partial.size(), partial.identity()
    vouched = bool(recorded and recorded.get("etag") and recorded.get("url") == source.url)
    response, identity, start = _open(source, model, recorded if kept and vouched else None, kept if vouched else 0)
    with response:
        if start:
            err.write(f"  continuing from {human_size(start)} fetched before\n")
        else:
            if kept:
                err.write(f"  the {human_size(kept)} fetched before are not of this file as it is now (it changed "
                          f"upstream, or the server cannot continue it): starting again from 0\n")
            partial.begin(identity)
        total = start + int(response.headers.get("Content-Length") or 0) or model.size_bytes or 0
        with open(partial.path, "ab") as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)
                start += len(chunk)
                report(start, total)
    if start < total:  # a server (or urllib3 1.x) that ends the body early without an error
        raise ConnectionCut(f"{start:,} of {total:,} bytes received")


def _open(source: Source, model: ModelFile, recorded: dict | None, done: int):
    """(response streaming the body, identity of the content, offset the body starts at). Redirects are
    followed here, so the Hub's answer (its X-Linked-Etag, before the content server is asked) decides
    whether a partial of another revision is dropped before any of its bytes is sent again."""
    headers = dict(source.headers, **{"Accept-Encoding": "identity"})
    if recorded:
        headers["Range"] = f"bytes={done}-"
        if not source.hub and not recorded["etag"].startswith("W/"):
            headers["If-Range"] = recorded["etag"]  # the server sends the whole file if it changed
    url, identity = source.url, None
    for _ in range(MAX_REDIRECTS):
        response = requests.get(url, headers=headers, stream=True, allow_redirects=False, timeout=TIMEOUT_S)
        _refuse(response, source, model)
        if source.hub and identity is None and "X-Repo-Commit" in response.headers:
            identity = {"url": source.url, "commit": response.headers["X-Repo-Commit"],
                        "etag": response.headers.get("X-Linked-Etag") or response.headers.get("ETag")}
            if recorded and identity["etag"] != recorded["etag"]:  # another revision of the file: from 0
                headers.pop("Range", None)
                recorded = None
        if not response.is_redirect:
            break
        next_url = urljoin(url, response.headers["Location"])
        if urlsplit(next_url).netloc != urlsplit(url).netloc:
            headers.pop("Authorization", None)  # the token is for the Hub only, never the content server
        response.close()
        url = next_url
    else:
        raise DownloadError(f"{model.source_url} redirected more than {MAX_REDIRECTS} times; download "
                            f"{model.filename} by hand: {model.download_hint()}")
    if recorded and response.status_code == 416:  # the range is past the end of what the server has
        response.close()
        return _open(source, model, None, 0)
    response.raise_for_status()
    identity = identity or {"url": source.url, "etag": response.headers.get("ETag")}
    if recorded and response.status_code == 206 and _range_start(response) == done and \
            identity["etag"] == recorded["etag"]:
        return response, identity, done
    if response.status_code == 206:  # a range of something else: ask for the whole file
        response.close()
        return _open(source, model, None, 0)
    return response, identity, 0


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range") or "")
    return int(match[1]) if match else None


def _refuse(response, source: Source, model: ModelFile) -> None:
    """Raise the error a refusal deserves: access (a gated Hub repository), or a file that is not there."""
    status = response.status_code
    if status not in (401, 403, 404):
        return
    response.close()
    if source.hub and status in (401, 403) and response.headers.get("X-Error-Code") not in (
            "RepoNotFound", "EntryNotFound", "RevisionNotFound"):
        raise AccessDeniedError(_refused(model, status, source.token_origin))
    raise DownloadError(f"{model.source_url} answered HTTP {status}: {model.filename} is not available there "
                        f"now. Download it by hand: {model.download_hint()}")


def _refused(model: ModelFile, status: int, token_origin: str | None) -> str:
    repo = model.hub_file()[0]
    if token_origin == "HF_TOKEN":
        token, fix = "HF_TOKEN is set but was refused", "put a read token of that account in HF_TOKEN"
    elif token_origin:
        token = (f"the token saved by the Hugging Face login ({token_origin}) was refused; "
                 f"HF_TOKEN is not set")
        fix = ("log in again with a read token of that account (hf auth login, or huggingface-cli login), or put "
               "one in the environment variable HF_TOKEN")
    else:
        token = "no token: HF_TOKEN is not set and no Hugging Face login is saved"
        fix = "put a read token in the environment variable HF_TOKEN (or save it with hf auth login)"
    return (f"huggingface.co refused {model.filename} (HTTP {status}; {token}). {repo} is gated: sign in at "
            f"https://huggingface.co/{repo}, accept its licence ({model.licence}) there, create a read token at "
            f"https://huggingface.co/settings/tokens, {fix} and run the command again.")


def _verify(model: ModelFile, staged: str, cache: HashCache, err) -> None:
    """Size, not-a-web-page and SHA-256 of the staged file against the catalogue."""
    problem = None
    size = os.path.getsize(staged)
    if looks_like_page(staged):
        problem = "a web page, not the model"
    elif model.size_bytes is not None and size != model.size_bytes:
        problem = f"{size:,} bytes where the published file has {model.size_bytes:,}"
    elif model.sha256:
        digest = cache.sha256(staged, Progress(model.filename, err, verb="verifying"))
        if digest != model.sha256.lower():
            problem = f"SHA-256 {digest} where the published file has {model.sha256}"
    if problem:
        raise ChecksumError(f"The download of {model.filename} from {model.source_url} is not the published file "
                            f"({problem}); it was deleted and nothing was saved under its name. Run the command "
                            f"again; if it fails the same way, the file changed upstream: report it.")


def selection(args: argparse.Namespace, catalogue: Catalogue) -> list[ModelFile]:
    needs = workflow_needs(catalogue=catalogue)
    if args.all or args.missing:
        chosen = [*catalogue.pack, *(m for files in needs.values() for m in files)]
        if args.missing:
            chosen = [m for m in chosen if not m.optional]
        return list(dict.fromkeys(chosen))
    by_name = {m.filename: m for m in catalogue.files}
    return list(dict.fromkeys(m for name in args.workflow for m in (needs[name] if name in needs else [by_name[name]])))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Download the model files that shipped workflows need into the folders ComfyUI reads "
        "(extra_model_paths.yaml included), each checked against its published size and SHA-256 before it is "
        "put in place. Files already in place are kept; a file of the wrong size (or, where its SHA-256 was "
        "computed by check-models --verify or by --verify here, the wrong hash) is replaced. An interrupted "
        "download continues where it stopped when the command runs again. FLUX.1-dev is gated on Hugging Face: "
        "accept its licence there and set HF_TOKEN (or log in with hf auth login).")
    parser.add_argument("workflow", metavar="WORKFLOW_OR_FILE", nargs="*", default=[],
                        help="a shipped workflow's name (workflows/NAME.json without .json), or a model file's name "
                             "from the README's table (t5xxl_fp8_e4m3fn.safetensors, ...); repeatable")
    parser.add_argument("--all", action="store_true",
                        help="every file the pack and the shipped workflows use, the optional one included")
    parser.add_argument("--missing", action="store_true",
                        help="every file the pack and the shipped workflows need that is missing or wrong")
    parser.add_argument("--verify", action="store_true",
                        help="also compute the SHA-256 of files already in place (once; remembered) and replace "
                             "those that differ from the published one")
    add_folder_arguments(parser)


def run(args: argparse.Namespace, out=None, err=None, catalogue: Catalogue = CATALOGUE) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if (len(args.workflow) > 0) + args.all + args.missing != 1:
        err.write("download: name the workflows or files to download, or pass --all or --missing (one of these).\n")
        return 2
    needs = workflow_needs(catalogue=catalogue)
    files = [m.filename for m in catalogue.files]
    unknown = [name for name in args.workflow if name not in needs and name not in files]
    if unknown:
        err.write(f"download: no shipped workflow or model file named {', '.join(unknown)}; choose workflows from: "
                  f"{', '.join(needs)}; or files from: {', '.join(files)}.\n")
        return 2
    folders = resolve_folders(args, out, err, "download")
    if folders is None:
        return 2
    cache, failed = HashCache(), []
    jobs, present = plan(selection(args, catalogue), folders, cache, args.verify, err, catalogue)
    for model, path in present:
        out.write(f"in place: {model.filename} ({path})\n")
    total = sum(job.model.size_bytes or 0 for job in jobs)
    out.write(f"{len(jobs)} file(s) to download, {human_size(total)} in all.\n" if jobs else
              "Nothing to download.\n")
    for job in jobs:
        note = f" (replacing the file there: {job.replaces})" if job.replaces else ""
        if job.keep_as:
            note = f"{note[:-1]}; it is kept as {os.path.basename(job.keep_as)})"
        out.write(f"\n{job.model.filename} -> {job.target}{note}\n  from {job.model.source_url} "
                  f"(licence: {job.model.licence})\n")
        try:
            fetch(job, cache, out, err)
        except KeyboardInterrupt:
            staging = os.path.join(os.path.dirname(job.target), STAGING)
            err.write(f"\ndownload: interrupted; nothing was saved under {job.target}. What was fetched is kept in "
                      f"{staging}: run the command again to continue from there.\n")
            return EXIT_INTERRUPTED
        except DownloadError as exc:
            err.write(f"download: {exc}\n")
            failed.append(job.model.filename)
            if isinstance(exc, DiskFullError):
                break
    if failed:
        out.write(f"\n{len(failed)} file(s) not downloaded: {', '.join(failed)} (see the messages above).\n")
        return 1
    out.write("\nAll the requested model files are in place.\n")
    return 0
