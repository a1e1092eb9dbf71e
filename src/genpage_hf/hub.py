"""The Hugging Face Hub side of GenPage folders: model paths that may be Hub repo ids, and pushing a stage's folder.

- `resolve_model_folder(name_or_path, revision)`: an existing local folder as is; otherwise a Hub repo id
  (`org/name` or `name`) fetched with `huggingface_hub.snapshot_download` (which honours `HF_HUB_OFFLINE=1`
  and the local cache) into its snapshot folder. Every loader of a model folder goes through it.
- `push_folder(folder, args, stage)`: after a training stage has written its final folder (and everything
  beside it), one commit of that folder to `--hub_model_id` (default: the output folder's name), through
  `HfApi.create_repo(exist_ok=True)` and `HfApi.create_commit`. `plan_upload` computes what is uploaded.
- The Trainer's own push machinery (a repo created when the Trainer is built, the output folder pushed at
  every checkpoint) never runs: GenPage trainers get a copy of their arguments with pushing off
  (`without_push`), so a stage pushes exactly once, its finished folder. `--hub_strategy checkpoint` adds
  the last complete `checkpoint-N` folder as `last-checkpoint/` to that commit, `all_checkpoints` every
  complete one under its own name; `end` and `every_save` push the final folder alone.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

_COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
_HUB_FIELDS = ("hub_model_id", "hub_token", "hub_revision", "hub_private_repo")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def is_repo_id(name: str) -> bool:
    """Whether `name` is spelled like a Hub model repo id (`org/name` or `name`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_model_folder(name_or_path: str | os.PathLike, revision: Optional[str] = None,
                         what: str = "model folder") -> str:
    """The local folder of `name_or_path`: the path itself when it exists, else the snapshot of a Hub repo id.

    `revision` (branch, tag or commit) applies to Hub repo ids only. Errors name the path or id and the
    revision: a ValueError for a bad revision or an incomplete cached snapshot, a FileNotFoundError when
    the name is neither a local folder nor a repo the Hub (or, offline, the local cache) has.
    """
    name = os.fspath(name_or_path)
    if os.path.exists(name):
        if revision is not None:
            raise ValueError(f"--revision {revision!r} selects a version of a Hub repo id; {name!r} is a local "
                             "folder (drop --revision, or name the Hub repo)")
        return name  # a file instead of a folder is reported by the caller, which knows what it expected
    if not is_repo_id(name):
        raise FileNotFoundError(f"{what} {name!r} does not exist (expected a folder saved by genpage_hf)")
    return _snapshot(name, revision, what)


def _snapshot(repo_id: str, revision: Optional[str], what: str) -> str:
    from huggingface_hub import constants, errors, snapshot_download

    at = f"revision {revision or 'main'!r}"
    local = f"{what} {repo_id!r} does not exist locally"
    try:
        return snapshot_download(repo_id, revision=revision)
    except errors.RevisionNotFoundError:
        raise ValueError(f"Hub repo {repo_id!r} has no {at} (--revision: a branch, tag or commit of it)") from None
    except errors.RepositoryNotFoundError:  # also gated or private repos without a token
        raise FileNotFoundError(f"{local}, and the Hub has no repo {repo_id!r} (or it is private or gated: log in "
                                "with `hf auth login`)") from None
    except errors.IncompleteSnapshotError as err:
        raise ValueError(f"Hub repo {repo_id!r} ({at}): its cached snapshot is incomplete ({_one_line(err)})") \
            from None
    except errors.LocalEntryNotFoundError:
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        raise FileNotFoundError(f"{local}, and the Hub repo {repo_id!r} ({at}) is not available: {why} and the "
                                f"local Hugging Face cache ({constants.HF_HUB_CACHE}) has no snapshot of it") from None
    except errors.HfHubHTTPError as err:
        raise ValueError(f"Hub repo {repo_id!r} ({at}) could not be downloaded: {_one_line(err)}") from None


# ---------------------------------------------------------------------------------------------------- pushing
def _strategy(args: Any) -> str:
    value = getattr(args, "hub_strategy", "every_save")
    return str(getattr(value, "value", value))


def hub_repo_id(args: Any) -> str:
    """The repo a stage pushes to: `--hub_model_id`, or the output folder's name (transformers' default)."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def check_push_arguments(args: Any) -> None:
    """Argument-time checks of the Hub options of a training config (TrainingArguments' hub_* fields)."""
    if not args.push_to_hub:
        given = [f"--{name}" for name in _HUB_FIELDS if getattr(args, name, None) is not None]
        given += ["--hub_strategy"] if _strategy(args) != "every_save" else []
        if given:
            raise ValueError(f"{', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect without "
                             "--push_to_hub")
        return
    repo_id = hub_repo_id(args)
    if not is_repo_id(repo_id):
        source = "--hub_model_id" if args.hub_model_id else "the name of --output_dir; set --hub_model_id"
        raise ValueError(f"--push_to_hub: {repo_id!r} ({source}) is not a valid Hub repo id (org/name or name)")
    if args.hub_revision is not None and _COMMIT_HASH.fullmatch(args.hub_revision):
        raise ValueError(f"--hub_revision {args.hub_revision!r} is a commit; a push goes onto a branch: name one")
    save = getattr(args, "save_strategy", "no")
    if _strategy(args) in ("checkpoint", "all_checkpoints") and str(getattr(save, "value", save)) == "no":
        raise ValueError(f"--hub_strategy {_strategy(args)} pushes checkpoint-N folders, but --save_strategy no "
                         "writes none: set --save_strategy steps (or epoch)")


def refuse_push(args: Any, reason: str) -> None:
    """A ValueError when `args` asks to push (`--push_to_hub`) where nothing can be pushed: `reason` says why."""
    if getattr(args, "push_to_hub", False):
        raise ValueError(f"--push_to_hub: {reason}")


def without_push(args: Any, trainer: Optional[str] = None) -> Any:
    """`args`, or a shallow copy with every hub option off, so a Trainer neither creates a repo nor pushes
    checkpoints; `trainer` (a class name) warns that the push is left to `push_folder`."""
    if args is None or not getattr(args, "push_to_hub", False):
        return args
    if trainer:
        warnings.warn(f"{trainer} does not push to the Hub itself (the genpage training commands push the saved "
                      "folder at the end of the stage); after saving, call genpage_hf.hub.push_folder(folder, args, "
                      "stage)", stacklevel=3)
    args = copy.copy(args)
    args.push_to_hub = False
    for name in _HUB_FIELDS:
        setattr(args, name, None)
    args.hub_strategy = "every_save" if isinstance(args.hub_strategy, str) else type(args.hub_strategy)("every_save")
    return args


@dataclass(frozen=True)
class HubUpload:
    """One commit to the Hub: which files (path in repo, local file) go to which repo, with which message."""

    repo_id: str
    folder: str
    files: tuple[tuple[str, str], ...]
    commit_message: str
    revision: Optional[str] = None
    private: Optional[bool] = None
    token: Optional[str] = field(default=None, repr=False)


def _folder_files(folder: str, prefix: str = "") -> list[tuple[str, str]]:
    """(path in repo, local path) of a folder's files, less hidden files, caches, `_*` and `checkpoint-*` at its top
    (transformers' own push ignores `_*` and `checkpoint-*` too)."""
    out = []
    for root, dirs, files in os.walk(folder):
        top = os.path.samefile(root, folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__"
                         and not (top and (d.startswith("_") or d.startswith("checkpoint-"))))
        for name in sorted(files):
            if name.startswith(".") or name.endswith(".pyc") or (top and name.startswith("_")):
                continue
            local = os.path.join(root, name)
            out.append((prefix + os.path.relpath(local, folder).replace(os.sep, "/"), local))
    return out


def plan_upload(folder: str | os.PathLike, args: Any, stage: str) -> HubUpload:
    """What `push_folder` uploads for a stage's saved `folder` under `args`' hub options (nothing is sent)."""
    from .loading_genpage import is_complete_checkpoint, last_complete_checkpoint

    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isfile(os.path.join(folder, "config.json")) and \
            not os.path.isfile(os.path.join(folder, "adapter_config.json")):
        raise FileNotFoundError(f"--push_to_hub: {folder!r} holds no saved model (config.json or "
                                "adapter_config.json); nothing to push")
    files = _folder_files(folder)
    strategy = _strategy(args)
    if strategy == "checkpoint":
        last = last_complete_checkpoint(folder)
        files += _folder_files(last, "last-checkpoint/") if last else []
    elif strategy == "all_checkpoints":
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if name.startswith("checkpoint-") and is_complete_checkpoint(path):
                files += _folder_files(path, f"{name}/")
    message = f"genpage {stage}: {os.path.basename(folder)}"
    if strategy in ("checkpoint", "all_checkpoints"):
        message += f" (hub_strategy {strategy})"
    return HubUpload(repo_id=hub_repo_id(args), folder=folder, files=tuple(files), commit_message=message,
                     revision=args.hub_revision, private=args.hub_private_repo, token=args.hub_token)


def _transport_errors() -> tuple[type, ...]:
    """The HTTP client's connection errors (huggingface_hub 2.x uses httpx2)."""
    for module in ("httpx2", "httpx"):
        try:
            return (importlib.import_module(module).TransportError,)
        except (ImportError, AttributeError):
            continue
    return ()


def upload(plan: HubUpload) -> str:
    """Create the repo if needed (and the branch `plan.revision`), then commit `plan.files` in one commit.

    Returns the commit's URL. Failures name the repo and the folder: ConnectionError (offline mode, the Hub
    unreachable), PermissionError (no token or no write access), ValueError (anything else the Hub refuses).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    where = f"cannot push {plan.folder!r} to the Hub repo {plan.repo_id!r}"
    later = (f"the folder is saved: upload it later with `hf upload {plan.repo_id} {plan.folder} --exclude "
             "'checkpoint-*'`")
    api = HfApi(token=plan.token)
    try:
        repo_id = api.create_repo(plan.repo_id, private=plan.private, exist_ok=True).repo_id
        if plan.revision is not None:
            api.create_branch(repo_id, branch=plan.revision, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=local) for path, local in plan.files]
        info = api.create_commit(repo_id, operations, commit_message=plan.commit_message, revision=plan.revision)
    except OfflineModeIsEnabled:
        raise ConnectionError(f"{where}: offline mode is on (HF_HUB_OFFLINE=1); {later}") from None
    except LocalTokenNotFoundError:
        raise PermissionError(f"{where}: no Hub token (log in with `hf auth login` or pass --hub_token); "
                              f"{later}") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status in (401, 403):
            raise PermissionError(f"{where}: not authorized (HTTP {status}; log in with `hf auth login` or pass "
                                  f"--hub_token with write access); {later}") from None
        raise ValueError(f"{where}: {_one_line(err)}; {later}") from None
    except _transport_errors() as err:
        raise ConnectionError(f"{where}: the Hub ({constants.ENDPOINT}) could not be reached ({_one_line(err)}); "
                              f"{later}") from None
    return info.commit_url


def push_folder(folder: str | os.PathLike, args: Any, stage: str) -> Optional[str]:
    """Push a stage's saved folder when `args.push_to_hub`; returns the commit URL (None when not pushing)."""
    if not getattr(args, "push_to_hub", False):
        return None
    url = upload(plan_upload(folder, args, stage))
    print(f"pushed {os.fspath(folder)} to the Hub: {url}", file=sys.stderr)  # stdout may carry a command's JSON
    return url


__all__ = ["HubUpload", "check_push_arguments", "hub_repo_id", "is_repo_id", "plan_upload", "push_folder",
           "refuse_push", "resolve_model_folder", "upload", "without_push"]
