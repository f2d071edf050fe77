"""Run files of `cobarl train`: reading a YAML options file (every key checked, each option once),
writing the resolved ``config.yaml`` atomically, and the diff of two configs that ``--resume`` refuses
or (with ``--allow-config-change``) reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cobarl.strategies import canonical_option
from cobarl.train.config import RENAMED, TrainConfig, split_values, strategy_option_fields


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of option values (keys checked by `make_config`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_unique_key_loader()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    try:
        check_one_name_per_option(data)
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        split_values(dict(data))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return data


def _unique_key_loader():
    """A safe YAML loader that refuses a mapping with a key given twice (PyYAML keeps the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (each option once)", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def check_one_name_per_option(data: dict[str, Any]) -> None:
    """Refuse one file naming an option twice under different spellings (``allocator`` and ``strategy``,
    ``beta`` and ``kl_beta``, ``max-steps`` and ``max_steps``, ``greso_p_easy`` and ``p_easy``, a flat
    key and the nested ``strategy:`` mapping's): which one wins would be an accident of ordering."""
    option_names = set(strategy_option_fields())

    def canonical(key: str) -> str:
        key = RENAMED.get(key.replace("-", "_"), key.replace("-", "_"))
        if canonical_option(key) in option_names or key in ("strategy", "name"):
            return "strategy." + {"name": "strategy"}.get(key, canonical_option(key))
        return key

    spellings: dict[str, list[str]] = {}
    for key, value in data.items():
        if RENAMED.get(str(key), str(key)) == "strategy" and isinstance(value, dict):
            for sub, v in value.items():
                if v is not None:  # an old file's bag lists an option under both names, unset (null) under one
                    spellings.setdefault(canonical(str(sub)), []).append(f"{key}.{sub}")
        else:
            spellings.setdefault(canonical(str(key)), []).append(str(key))
    clashes = [f"{' and '.join(names)}" for names in spellings.values() if len(names) > 1]
    if clashes:
        raise ValueError("the same option is set twice: " + "; ".join(clashes) + "; keep one of each")


def dump_yaml(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config atomically (:func:`cobarl.io.write_text`)."""
    import yaml

    from cobarl.io import write_text

    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


# Options that do not change what a run computes: they may differ on --resume without a diff.
NOT_RUN_DEFINING = frozenset({
    "output_dir", "resume", "fresh", "allow_config_change", "max_steps", "save_steps", "save_total_limit",
    "progress", "report_to", "cpu_threads", "eval_every", "reward_timeout", "reward_workers", "reward_failure_limit",
    "device", "transitions", "vllm_server_url",
})


def config_diff(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """Run-defining options that differ, as ``name: saved -> new`` lines."""
    a, b = saved.to_dict(), new.to_dict()
    out = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in NOT_RUN_DEFINING and k != "strategy" and a[k] != b[k]]
    sa, sb = a["strategy"], b["strategy"]
    out += [f"{'strategy' if k == 'name' else k}: {sa.get(k)!r} -> {sb.get(k)!r}"
            for k in dict.fromkeys([*sa, *sb]) if sa.get(k) != sb.get(k)]
    if saved.allocations != new.allocations and saved.strategy.options.to_dict().get("schedule") == "linear-decay":
        # linear-decay's schedule spans the run's allocations: a longer run is a different schedule.
        out.append(f"max_steps: {saved.max_steps} -> {new.max_steps} (sets the linear-decay schedule length)")
    return out
