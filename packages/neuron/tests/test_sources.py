from pathlib import Path

from cortex_neuron.sources import ModelSources
from cortex_neuron.testing import fake_model


def hf_entry(hub: Path, repo: str, revision: str = "abc123", *, config: bool = True) -> Path:
    entry = hub / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(revision + "\n")
    if config:
        (snapshot / "config.json").write_text("{}")
    return snapshot


def test_scan_model_dirs_and_the_cache(tmp_path):
    first, second, cache = tmp_path / "a", tmp_path / "b", tmp_path / "hf"
    fake_model(first, "org/one")
    fake_model(first, "solo")
    fake_model(second, "org/one")  # shadowed by the first dir
    fake_model(second, "org/two")
    (first / "org" / "not-a-model").mkdir()
    (first / ".hidden").mkdir()
    ((first / ".hidden") / "config.json").write_text("{}")
    snapshot = hf_entry(cache / "hub", "Qwen/Qwen3-0.6B")
    hf_entry(cache / "hub", "broken/repo", config=False)
    sources = ModelSources((str(first), str(second), str(tmp_path / "missing")), str(cache))
    found = sources.scan()
    assert found == {
        "org/one": first / "org" / "one",
        "solo": first / "solo",
        "org/two": second / "org" / "two",
        "Qwen/Qwen3-0.6B": snapshot,
    }


def test_resolve(tmp_path):
    fake_model(tmp_path / "m", "org/one")
    snapshot = hf_entry(tmp_path / "hf", "org/cached")
    sources = ModelSources((str(tmp_path / "m"),), str(tmp_path / "hf"))
    assert sources.resolve("org/one") == tmp_path / "m" / "org" / "one"
    assert sources.resolve("org/cached") == snapshot
    assert sources.resolve("org/none") is None


def test_a_cache_ref_cannot_point_outside_its_snapshots(tmp_path):
    entry = tmp_path / "hub" / "models--org--evil"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("../../..")
    (entry / "config.json").write_text("{}")
    sources = ModelSources((), str(tmp_path))
    assert sources.resolve("org/evil") is None
    assert sources.scan() == {}


def test_the_default_cache_is_the_users(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    snapshot = hf_entry(tmp_path / ".cache" / "huggingface" / "hub", "org/x")
    assert ModelSources((), "").resolve("org/x") == snapshot


def test_a_symlink_out_of_the_roots_is_not_a_model(tmp_path):
    """A model folder or config.json linked from outside is neither listed nor loadable; a link
    that stays inside the root (the cache's blobs) is."""
    outside = fake_model(tmp_path / "elsewhere", "org/secret")
    root = tmp_path / "models"
    fake_model(root, "org/real")
    (root / "org" / "linked").symlink_to(outside)
    config_only = root / "org" / "config-linked"
    config_only.mkdir()
    (config_only / "config.json").symlink_to(outside / "config.json")
    (root / "escape").symlink_to(tmp_path / "elsewhere" / "org")
    hub = tmp_path / "hf" / "hub"
    snapshot = hf_entry(hub, "org/cached", config=False)
    blob = hub / "models--org--cached" / "blobs" / "cfg"
    blob.parent.mkdir()
    blob.write_text("{}")
    (snapshot / "config.json").symlink_to(Path("..", "..", "blobs", "cfg"))
    leaky = hf_entry(hub, "org/leaky", config=False)
    (leaky / "config.json").symlink_to(outside / "config.json")
    sources = ModelSources((str(root),), str(tmp_path / "hf"))
    assert sources.scan() == {"org/real": root / "org" / "real", "org/cached": snapshot}
    for model_id in ("org/linked", "org/config-linked", "escape/secret", "org/leaky"):
        assert sources.resolve(model_id) is None, model_id
    assert sources.resolve("org/cached") == snapshot
