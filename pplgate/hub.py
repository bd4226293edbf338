"""The Hugging Face hub, through ``huggingface_hub`` and its cache (``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``).

huggingface_hub is imported where a hub source is used, never by a run of local files.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from pplgate.errors import PplgateError, SourceUnavailable
from pplgate.redact import bare_address, redact

HF_ALTERNATIVE = "hf://openai-community/gpt2/onnx/decoder_model.onnx"
SOURCES_FOLDER_ADVICE = (
    "--sources DIR (in the gate --gate-sources=DIR, or $PPLGATE_SOURCES) with a folder 'python -m "
    "pplgate fetch DIR' wrote"
)


def offline_advice(option: str, copy: str) -> str:
    """What to do about a hub source that cannot be had, without advising what is already done."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return (
            f"it is not in the Hugging Face cache and HF_HUB_OFFLINE is set: pass {option} with {copy}, or "
            f"{SOURCES_FOLDER_ADVICE}"
        )
    return (
        f"pass {option} with {copy}, or {SOURCES_FOLDER_ADVICE}, or set HF_HUB_OFFLINE=1 to use the Hugging Face cache"
    )


def hub_address(spec: str) -> tuple[str, str, dict[str, str]]:
    """``hf://<owner>/<repo>/<path in repo>[?revision=R&token=T]`` -> (repo, path, hf_hub_download's keywords)."""
    parts = urllib.parse.urlsplit(spec)
    names = [parts.netloc, *parts.path.split("/")[1:]]
    if len(names) < 3 or not all(names):
        raise PplgateError(
            f"model {bare_address(spec)} is not of the form hf://<owner>/<repo>/<path in repo>: for example "
            f"{HF_ALTERNATIVE}."
        )
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - {"revision", "token"})
    if unknown or parts.fragment:
        what = "parameter " + repr(unknown[0]) if unknown else "a fragment"
        raise PplgateError(
            f"model {bare_address(spec)} has {what}, which an hf:// address does not take: "
            "only ?revision=<commit, branch or tag> and ?token=<hub token> (or $HF_TOKEN) are read."
        )
    return "/".join(names[:2]), "/".join(names[2:]), params


def hub_download(spec: str) -> Path:
    """``hf://<owner>/<repo>/<path in repo>`` through huggingface_hub and its cache."""
    import huggingface_hub
    from huggingface_hub import utils as hf_errors  # where 0.24 (the floor) and 2.x both have them

    repo, filename, params = hub_address(spec)
    shown = bare_address(spec)
    try:
        return Path(
            huggingface_hub.hf_hub_download(repo, filename, revision=params.get("revision"), token=params.get("token"))
        )
    except hf_errors.HFValidationError as err:
        raise PplgateError(
            f"model {shown} names no valid hub repository ({redact(str(err).splitlines()[0])}): "
            f"write hf://<owner>/<repo>/<path in repo>, for example {HF_ALTERNATIVE}."
        ) from None
    except hf_errors.LocalEntryNotFoundError as err:
        raise SourceUnavailable(
            f"model {shown} cannot be reached: {offline_advice('--model', 'a local copy')}.", option="--model"
        ) from err
    except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError, hf_errors.RevisionNotFoundError) as err:
        raise PplgateError(
            f"model {shown} does not exist on the hub ({type(err).__name__}): check the repository and file name."
        ) from err
    except hf_errors.HfHubHTTPError as err:
        raise SourceUnavailable(
            f"model {shown} could not be downloaded ({redact(str(err))}): pass --model with a local copy.",
            option="--model",
        ) from err


def snapshot(
    repo: str, patterns: list[str], repo_type: str, what: str, advice: str, option: str, name_error: bool = True
) -> Path:
    """The files of ``repo`` matching ``patterns`` in the hub's cache, downloaded where allowed; one sentence when it
    cannot be had.
    """
    import huggingface_hub
    import huggingface_hub.utils  # its errors; huggingface_hub.errors lacks them before 0.25

    try:
        return Path(huggingface_hub.snapshot_download(repo, repo_type=repo_type, allow_patterns=patterns))
    except (OSError, huggingface_hub.utils.HfHubHTTPError) as err:
        why = f" ({type(err).__name__})" if name_error else ""
        raise SourceUnavailable(f"{what} {repo} cannot be reached{why}: {advice}.", option=option) from err
