"""Where the doctor's configuration comes from: this process's environment, or the azd environment.

A laptop that ran ``azd up`` has the deployment's settings in azd's environment, not in the
shell. When the shell configures no Azure endpoint and azd is installed, the doctor makes the
variables the product reads from ``azd env get-values`` its own (chat.settings.adopt_values), so
that the settings see them as the deployed app sees its app settings.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from typing import Literal

from dotenv import dotenv_values

from chat.settings import ConfigurationError, adopt_values, get_settings

Source = Literal["auto", "environment", "azd"]


def azd_values() -> dict[str, str] | None:
    """The values of the current azd environment, or None without azd or an environment."""
    azd = shutil.which("azd")
    if azd is None:
        return None
    try:
        done = subprocess.run([azd, "env", "get-values"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return {name: value for name, value in dotenv_values(stream=io.StringIO(done.stdout)).items() if value is not None}


def _sets_azure_endpoints() -> bool:
    try:
        settings = get_settings()
    except ConfigurationError:
        return True  # something is configured (wrongly): check that, not azd's
    return bool(settings.azure_openai.azure_openai_endpoint or settings.azure_search.azure_search_endpoint)


def load_configuration(source: Source) -> str:
    """Make the chosen configuration the process's own; says where it came from, for the report."""
    if source == "environment" or (source == "auto" and _sets_azure_endpoints()):
        return "from the environment"
    values = azd_values()
    if values is None:
        if source == "azd":
            return "azd found no environment: run azd env list, or azd up first"
        return "from the environment; azd has none to offer"
    return f"from the azd environment: {len(adopt_values(values))} variables"
