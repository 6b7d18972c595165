"""Spec and policy readers fed random and truncated files: a clean error naming the file, or a
parse that holds exactly what the file says; never a traceback."""
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from bench.commands import accept
from bench.core import specs

SHIPPED_SPECS = (resources.files("bench.core") / "specs.toml").read_text(encoding="utf-8")
SHIPPED_POLICY = (resources.files("bench.commands") / "policy.toml").read_text(encoding="utf-8")
USER_SPECS = '''[sources]
X = "a test source"

[[gpu]]
name = "Lab Card"
nvml_names = ["NVIDIA Lab Card"]
memory_bandwidth = { value = 1000, unit = "GB/s", source = "X" }
bf16_dense = { value = 100, unit = "TFLOP/s", source = "X" }
bf16_sparse = { value = 200, unit = "TFLOP/s", source = "X" }
'''
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _spec_file(tmp_path, content: bytes):
    path = tmp_path / "user.toml"
    path.write_bytes(content)
    try:
        db = specs.load(path)
    except specs.SpecError as e:
        assert str(path) in str(e)
        return None
    # Accepted: the file is TOML, and every card it names is in the database with its figures as written.
    doc = tomllib.loads(content.decode("utf-8"))
    for raw in doc.get("gpu", []):
        entry = db.find(raw["name"])
        assert entry is not None, raw["name"]
        for key, figure in raw.items():
            if key in specs.FIGURES:
                assert (entry.figures[key].value, entry.figures[key].unit) == (figure["value"], figure["unit"])
    assert db.find("H100 SXM5 80GB") is not None  # the shipped entries stay
    return db


def _policy_file(tmp_path, content: bytes):
    path = tmp_path / "policy.toml"
    path.write_bytes(content)
    try:
        policy = accept.load_policy(str(path))
    except accept.PolicyError as e:
        assert str(path) in str(e)
        return None
    # Accepted: every check and setting the file gives is what the policy now holds.
    doc = tomllib.loads(content.decode("utf-8"))
    checks = {c.name: c for c in policy.checks}
    for raw in doc.get("check", []):
        for key, value in raw.items():
            assert getattr(checks[raw["name"]], key) == value, (raw["name"], key)
    for section in ("health", "idle_gate"):
        for key, value in doc.get(section, {}).items():
            assert getattr(policy, section)[key] == value, (section, key)
    return policy


def test_the_untouched_files_parse_to_what_they_say(tmp_path):
    db = _spec_file(tmp_path, USER_SPECS.encode())
    assert db.find("Lab Card").figures["bf16_dense"].value == 100
    policy = _policy_file(tmp_path, SHIPPED_POLICY.encode())
    assert [c.name for c in policy.checks] == [c["name"] for c in tomllib.loads(SHIPPED_POLICY)["check"]]
    override = _policy_file(tmp_path, b'[[check]]\nname = "memory-copy"\nmin_pct = 70.5\n[health]\nmax_temperature_c = 80\n')
    assert override.health["max_temperature_c"] == 80


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(USER_SPECS)))
def test_truncated_user_spec_file(tmp_path, cut):
    _spec_file(tmp_path, USER_SPECS[:cut].encode())


@FUZZ
@given(pos=st.integers(min_value=0, max_value=len(USER_SPECS) - 1), junk=st.text(min_size=1, max_size=6))
def test_corrupted_user_spec_file(tmp_path, pos, junk):
    _spec_file(tmp_path, (USER_SPECS[:pos] + junk + USER_SPECS[pos + len(junk):]).encode("utf-8", "replace"))


@FUZZ
@given(content=st.binary(max_size=300))
def test_random_bytes_as_spec_file(tmp_path, content):
    _spec_file(tmp_path, content)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(SHIPPED_SPECS)))
def test_truncated_copy_of_the_shipped_database_as_user_file(tmp_path, cut):
    _spec_file(tmp_path, SHIPPED_SPECS[:cut].encode())


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(SHIPPED_POLICY)))
def test_truncated_policy_file(tmp_path, cut):
    _policy_file(tmp_path, SHIPPED_POLICY[:cut].encode())


@FUZZ
@given(pos=st.integers(min_value=0, max_value=len(SHIPPED_POLICY) - 1), junk=st.text(min_size=1, max_size=6))
def test_corrupted_policy_file(tmp_path, pos, junk):
    _policy_file(tmp_path, (SHIPPED_POLICY[:pos] + junk + SHIPPED_POLICY[pos + len(junk):]).encode("utf-8", "replace"))


@FUZZ
@given(content=st.binary(max_size=300))
def test_random_bytes_as_policy_file(tmp_path, content):
    _policy_file(tmp_path, content)


def test_fault_injection_is_off_by_default_and_rejects_unknown_names(capsys):
    from bench.core import faults

    assert faults.active({}) == {}
    faults.warn({})
    assert capsys.readouterr().err == ""
    assert faults.active({faults.ENV: "bitflip, slow-rank:2"}) == {"bitflip": "", "slow-rank": "2"}
    faults.warn({faults.ENV: "memtest"})
    assert "FAULT INJECTION ON" in capsys.readouterr().err
    with pytest.raises(faults.FaultError, match="unknown fault 'bitfilp'"):
        faults.active({faults.ENV: "bitfilp"})
