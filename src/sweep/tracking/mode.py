"""Which wandb mode a run gets, decided before any wandb call: never a prompt, never a hang.

`wandb.mode`: `online` / `offline` / `disabled` are taken as given; `auto` is disabled where
the wandb package is not installed (bare accelerator images), respects `WANDB_MODE` (and
`WANDB_DISABLED`) when set, else goes online when an API key is configured (`WANDB_API_KEY`,
an identity token file, a netrc entry for the server, or wandb's settings file) and offline
otherwise. Online is only tried with a key, after a TCP check of the server (`probe`, bounded
by `wandb.init_timeout`, DNS included); once an online start fails, every
later run of this process goes offline (`mark_online_failed`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
from urllib.parse import urlsplit

MODES = ("online", "offline", "disabled")
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline"}
_ENV_MODES |= {"disabled": "disabled"}
_TRUE = ("1", "true", "yes", "on")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")

# Process-wide: once an online init fails, every later run of this process goes offline.
_fallback_reason: str | None = None


def mark_online_failed(reason: str) -> None:
    """An online start failed: offline from now on in this process, and no more of wandb's own
    usage telemetry to that server (its exporters would hold up process exit on timeouts)."""
    global _fallback_reason
    _fallback_reason = reason
    with contextlib.suppress(Exception):
        from wandb.analytics.opentelemetry import opentelemetry_proxy

        opentelemetry_proxy.disable()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def base_url() -> str:
    url = os.environ.get("WANDB_BASE_URL")
    if url:
        return url.rstrip("/")
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url).rstrip("/")
    except Exception:
        return "https://api.wandb.ai"


def api_key_configured() -> bool:
    """Whether wandb would find credentials without asking: env, netrc, or its settings file.

    Uses wandb's own lookup with prompting off; never asks, never contacts the server.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = base_url()
    try:
        from wandb.sdk.lib import wbauth

        auth = wbauth.authenticate_session(
            host=host, source="sweep", prompt=False, update_session=False
        )
        return auth is not None
    except Exception:  # a malformed key counts as configured: online init will say what's wrong
        return _netrc_has(host)


def _netrc_has(host: str) -> bool:
    import netrc

    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        creds = netrc.netrc(path).authenticators(urlsplit(host).netloc)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(creds and creds[2])


def resolve_mode(requested: str) -> tuple[str, str, str]:
    """(mode, status, reason) for a config's `wandb.mode`, before any wandb call.

    status is `ok`, `disabled` or `offline-fallback` (online was wanted but cannot be had).
    """
    if requested not in (*MODES, "auto"):
        return "offline", "offline-fallback", f"unknown wandb.mode={requested!r}"
    if requested == "auto":
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if importlib.util.find_spec("wandb") is None:
            mode, reason = "disabled", "auto: the wandb package is not installed"
        elif _env_flag("WANDB_DISABLED"):
            mode, reason = "disabled", "WANDB_DISABLED is set"
        elif env_mode:
            if env_mode not in _ENV_MODES:
                return "offline", "offline-fallback", f"unknown WANDB_MODE={env_mode!r}"
            mode, reason = _ENV_MODES[env_mode], f"WANDB_MODE={env_mode}"
        elif api_key_configured():
            mode, reason = "online", "auto: API key configured"
        else:
            mode, reason = "offline", "auto: no API key configured (`wandb login`, then sync)"
    else:
        mode, reason = requested, f"wandb.mode={requested}"
    if mode == "disabled":
        return mode, "disabled", reason
    if mode == "online":
        if _fallback_reason is not None:
            return "offline", "offline-fallback", f"earlier online init failed: {_fallback_reason}"
        if not api_key_configured():
            return "offline", "offline-fallback", "no API key configured (never prompting)"
    return mode, "ok", reason


def probe(url: str, timeout: float) -> str | None:
    """Why the server's TCP port cannot be reached within `timeout` (None: it can, or a proxy
    is configured and decides). Runs in a daemon thread: even a DNS lookup cannot hang us."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"bad server URL {url!r}"
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"cannot connect to {host}:{port}: {exc}")

    thread = threading.Thread(target=connect, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"
