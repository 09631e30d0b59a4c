"""`download`: fetch the model files that shipped workflows need into the folders ComfyUI reads, verified.

Nothing in the pack calls this: it runs only when a user types the command. Hugging Face files come through
`huggingface_hub` (resume of a cut connection, progress bar, HF_TOKEN, HF_ENDPOINT), the others (facexlib's
GitHub release assets) through `requests` with a resumable `.part` file. Every file is written into a
hidden staging folder beside its destination, checked against the catalogue's size and SHA-256, and only
then renamed onto its real name: an interrupted, refused or wrong download never leaves a file under the
name the loaders read, and a file already there that is not known to be wrong is never overwritten."""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from dataclasses import dataclass

from .catalog import CATALOGUE, Catalogue, ModelFile, find_in_folders
from .check_models import (FolderMap, HashCache, Progress, add_folder_arguments, file_problem, human_size,
                           looks_like_page, resolve_folders, workflow_needs)
from .errors import FaceMigrationError

STAGING = ".face_migration_download"  # beside the destination, so the final rename stays on one disk
CHUNK = 1 << 20
TIMEOUT_S = 30
EXIT_INTERRUPTED = 130


class DownloadError(FaceMigrationError):
    """A model file that could not be fetched; the message names the file, the reason and the fix."""


class AccessDeniedError(DownloadError):
    """The server refused the file (401/403): a gated repository without a token or accepted licence."""


class ChecksumError(DownloadError):
    """The downloaded bytes are not the published file (size or SHA-256); nothing was kept."""


class DiskFullError(DownloadError):
    """Not enough free space for the file, found before or while writing it."""


@dataclass
class Job:
    model: ModelFile
    target: str  # where the file goes (its real name)
    replaces: str | None  # what is wrong with the file now there, when it is replaced


def plan(models: list[ModelFile], folders: FolderMap) -> tuple[list[Job], list[tuple[ModelFile, str]]]:
    """(files to fetch, files already in place with their path). A file found under an accepted name that
    is not known to be wrong is in place; a wrong one is replaced where it is (where ComfyUI finds it)."""
    jobs, present = [], []
    for model in models:
        roots = folders.roots(model.folder)
        path = find_in_folders(model, roots)
        problem = file_problem(path, model) if path else None
        if path and not problem:
            present.append((model, path))
        else:
            target = path or os.path.join(folders.download_root(model.folder), model.subdirs[0], model.filename)
            jobs.append(Job(model, target, problem))
    return jobs, present


def fetch(job: Job, cache: HashCache, out, err) -> None:
    """Download, verify and atomically put one file in place; raises DownloadError (or KeyboardInterrupt)
    with nothing left under the real name."""
    model = job.model
    folder = os.path.dirname(job.target)
    staging = os.path.join(folder, STAGING)
    os.makedirs(folder, exist_ok=True)
    _check_free_space(model, folder)
    os.makedirs(staging, exist_ok=True)
    try:
        staged = _fetch_hub(model, staging) if model.hub_file() else _fetch_https(model, staging, err)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(f"The disk holding {folder} is full: {model.filename} "
                                f"({human_size(model.size_bytes or 0)}) did not fit. Free some space and run the "
                                f"command again.") from exc
        raise
    try:
        _verify(model, staged, cache, err)
    except ChecksumError:
        shutil.rmtree(staging, ignore_errors=True)  # wrong bytes: nothing there is worth resuming from
        raise
    os.replace(staged, job.target)
    if model.sha256:  # so `check-models --verify` need not read it again
        cache.record(job.target, model.sha256)
    shutil.rmtree(staging, ignore_errors=True)
    out.write(f"  saved {job.target}\n")


def _check_free_space(model: ModelFile, folder: str) -> None:
    free = shutil.disk_usage(folder).free
    if model.size_bytes and free < model.size_bytes:
        raise DiskFullError(f"{model.filename} needs {human_size(model.size_bytes)} but {folder} has "
                            f"{human_size(free)} free. Free some space (or put the folder on another disk through "
                            f"extra_model_paths.yaml) and run the command again.")


def _fetch_hub(model: ModelFile, staging: str) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise DownloadError("The download command needs the Python package huggingface_hub (ComfyUI installs it "
                            "with transformers). Run: python -m pip install huggingface_hub  (with the Python "
                            "you run ComfyUI with).") from exc
    repo, revision, path = model.hub_file()
    try:
        # HF_ENDPOINT is passed on because huggingface_hub reads it only once, when first imported.
        return hf_hub_download(repo, path, revision=revision, local_dir=staging,
                               token=os.environ.get("HF_TOKEN") or None, endpoint=os.environ.get("HF_ENDPOINT"))
    except Exception as exc:  # huggingface_hub's own errors, whose classes differ between its versions
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise
        status = _http_status(exc)
        if status in (401, 403):
            raise AccessDeniedError(_refused(model, repo, status)) from exc
        raise DownloadError(f"{model.filename} could not be downloaded from {model.source_url}: {exc}. Check "
                            f"the connection (and HF_ENDPOINT if set) and run the command again.") from exc


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an error, looking through the errors it was raised from."""
    while exc is not None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None:
            return status
        exc = exc.__cause__ or exc.__context__
    return None


def _refused(model: ModelFile, repo: str, status: int) -> str:
    token = "HF_TOKEN is set but was refused" if os.environ.get("HF_TOKEN") else "no HF_TOKEN is set"
    return (f"huggingface.co refused {model.filename} (HTTP {status}; {token}). {repo} is gated: sign in at "
            f"https://huggingface.co/{repo}, accept its licence ({model.licence}) there, create a read token at "
            f"https://huggingface.co/settings/tokens and run the command again with it in the environment "
            f"variable HF_TOKEN.")


def _fetch_https(model: ModelFile, staging: str, err) -> str:
    """A plain HTTPS download into <staging>/<name>.part, resumed from where an earlier run stopped."""
    import requests

    part = os.path.join(staging, model.filename + ".part")
    done = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    try:
        with requests.get(model.source_url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
            if response.status_code in (401, 403, 404):
                raise DownloadError(f"{model.source_url} answered HTTP {response.status_code}: {model.filename} "
                                    f"is not available there now. Download it by hand: {model.download_hint()}")
            response.raise_for_status()
            if response.status_code != 206:  # the server ignored the range: start again
                done = 0
            total = done + int(response.headers.get("Content-Length") or 0) or model.size_bytes or 1
            progress = Progress(model.filename, err, verb="downloading")
            with open(part, "ab" if done else "wb") as handle:
                for chunk in response.iter_content(CHUNK):
                    handle.write(chunk)
                    done += len(chunk)
                    progress(min(done / total, 1.0))
    except requests.RequestException as exc:
        raise DownloadError(f"{model.filename} could not be downloaded from {model.source_url}: {exc}. Run the "
                            f"command again: it continues where it stopped.") from exc
    return part


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
    return list(dict.fromkeys(m for name in args.workflow for m in needs[name]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Download the model files that shipped workflows need into the folders ComfyUI reads "
        "(extra_model_paths.yaml included), each checked against its published size and SHA-256 before it is "
        "put in place. Files already in place are kept. FLUX.1-dev is gated on Hugging Face: accept its licence "
        "there and set HF_TOKEN.")
    parser.add_argument("workflow", metavar="WORKFLOW", nargs="*", default=[],
                        help="a shipped workflow's name (workflows/NAME.json without .json); repeatable")
    parser.add_argument("--all", action="store_true",
                        help="every file the pack and the shipped workflows use, the optional one included")
    parser.add_argument("--missing", action="store_true",
                        help="every file the pack and the shipped workflows need that is missing or wrong")
    add_folder_arguments(parser)


def run(args: argparse.Namespace, out=None, err=None, catalogue: Catalogue = CATALOGUE) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if (len(args.workflow) > 0) + args.all + args.missing != 1:
        err.write("download: name the workflows to download for, or pass --all or --missing (one of these).\n")
        return 2
    needs = workflow_needs(catalogue=catalogue)
    unknown = [name for name in args.workflow if name not in needs]
    if unknown:
        err.write(f"download: no shipped workflow named {', '.join(unknown)}; choose from: {', '.join(needs)}.\n")
        return 2
    folders = resolve_folders(args, out, err, "download")
    if folders is None:
        return 2
    jobs, present = plan(selection(args, catalogue), folders)
    for model, path in present:
        out.write(f"in place: {model.filename} ({path})\n")
    total = sum(job.model.size_bytes or 0 for job in jobs)
    out.write(f"{len(jobs)} file(s) to download, {human_size(total)} in all.\n" if jobs else
              "Nothing to download.\n")
    cache, failed = HashCache(), []
    for job in jobs:
        note = f" (replacing the file there: {job.replaces})" if job.replaces else ""
        out.write(f"\n{job.model.filename} -> {job.target}{note}\n  from {job.model.source_url} "
                  f"(licence: {job.model.licence})\n")
        try:
            fetch(job, cache, out, err)
        except KeyboardInterrupt:
            err.write(f"\ndownload: interrupted; nothing was saved under {job.target}. Run the command again to "
                      f"continue.\n")
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
