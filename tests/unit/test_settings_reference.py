"""docs/settings.md and deploy/broker.toml are generated from the config definitions and must be
what `tidelog settings --markdown` / `--toml` print now: a setting added, renamed or changed
without regenerating them fails here."""

from __future__ import annotations

import re
from pathlib import Path

from tidelog.cli.settings import markdown, toml
from tidelog.config import BROKER_CONFIGS, GROUP_CONFIG_DEFAULTS, TOPIC_CONFIG_DEFAULTS, BrokerConfig

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = ("regenerate: .venv/bin/tidelog settings --markdown > docs/settings.md && "
              ".venv/bin/tidelog settings --toml > deploy/broker.toml")


def test_settings_reference_is_up_to_date():
    assert (ROOT / "docs" / "settings.md").read_text() == markdown(), f"docs/settings.md is stale; {REGENERATE}"


def test_sample_broker_toml_is_up_to_date():
    assert (ROOT / "deploy" / "broker.toml").read_text() == toml(), f"deploy/broker.toml is stale; {REGENERATE}"


def test_reference_lists_every_setting_with_type_default_and_dynamic():
    text = markdown()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9.]+)` \|.*$", text, re.M)}
    assert set(rows) == set(BROKER_CONFIGS) | set(TOPIC_CONFIG_DEFAULTS) | set(GROUP_CONFIG_DEFAULTS)
    assert rows["num.partitions"] == ("| `num.partitions` | int | `1` | at least 1 | no | `TIDELOG_NUM_PARTITIONS` | "
                                      "Default partition count of auto-created topics. |")
    assert "| `retention.ms` | long | `log.retention.ms` (`1209600000`) | at least -1 | yes, per topic |" in rows["retention.ms"]
    assert "-1 to 65535" in rows["http.port"]


def test_sample_broker_toml_loads_to_the_defaults_when_every_line_is_uncommented(tmp_path):
    uncommented = tmp_path / "broker.toml"
    uncommented.write_text(re.sub(r'^# (".*" = .*)$', r"\1", toml(), flags=re.M))
    config = BrokerConfig.load(uncommented, env={})
    assert set(config.sources) == set(BROKER_CONFIGS)
    assert config.values == BrokerConfig.load(env={}).values
