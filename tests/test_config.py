"""Config parsing: YAML 1.1 booleans where an option is a word."""

import pytest

from mammosynth.config import from_dict, parse_overrides
from mammosynth.train.method import TrainConfig
from mammosynth.errors import ConfigError


def test_off_on_words_reach_literal_options():
    # yaml.safe_load("off") is False: `--set amp=off` once failed with "amp: False is not one of ..."
    over = parse_overrides(["amp=off", "channels_last=false"])
    assert over == {"amp": False, "channels_last": False}
    cfg = from_dict(TrainConfig, over)
    assert cfg.amp == "off" and cfg.channels_last is False


def test_a_boolean_with_no_matching_word_is_still_refused():
    with pytest.raises(ConfigError, match="amp"):
        from_dict(TrainConfig, {"amp": True})
