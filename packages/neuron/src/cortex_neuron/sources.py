"""Where models come from: the model dirs and the local Hugging Face cache.

A folder ``<model_dir>/<org>/<name>`` (or ``<model_dir>/<name>``) holding a ``config.json`` is
the model ``org/name`` (or ``name``); a Hugging Face cache entry ``models--org--name`` keeps its
repository id. Ids are checked against the grammar before any path is built from them, and every
path found stays inside its root, symlinks resolved (a folder or ``config.json`` linked from
outside is not a model), so a client can never reach a path the operator did not put there.
Scanning blocks on the file system; the neuron runs it in a worker thread.
"""

from pathlib import Path

from cortex_core.ids import is_model_id

__all__ = ["ModelSources"]


class ModelSources:
    """Finds models in ``model_dirs`` (first) and the Hugging Face cache (``hf_cache``)."""

    def __init__(self, model_dirs: tuple[str, ...], hf_cache: str) -> None:
        self._dirs = [Path(d) for d in model_dirs]
        cache = Path(hf_cache) if hf_cache else Path.home() / ".cache" / "huggingface"
        self._hub = cache / "hub" if (cache / "hub").is_dir() else cache

    def scan(self) -> dict[str, Path]:
        """Every model found, by id: model dirs win over the cache, earlier dirs over later."""
        found: dict[str, Path] = {}
        for root in self._dirs:
            for config in sorted(root.glob("*/config.json")) + sorted(root.glob("*/*/config.json")):
                model_id = config.parent.relative_to(root).as_posix()
                if is_model_id(model_id) and _inside(config, root):
                    found.setdefault(model_id, config.parent)
        for entry in sorted(self._hub.glob("models--*")):
            model_id = entry.name.removeprefix("models--").replace("--", "/", 1)
            snapshot = self._snapshot(entry)
            if is_model_id(model_id) and snapshot is not None:
                found.setdefault(model_id, snapshot)
        return found

    def resolve(self, model_id: str) -> Path | None:
        """The folder of ``model_id`` (a valid id), or ``None`` when it is not on this host."""
        for root in self._dirs:
            candidate = root / model_id
            if (candidate / "config.json").is_file() and _inside(candidate / "config.json", root):
                return candidate
        entry = self._hub / f"models--{model_id.replace('/', '--')}"
        return self._snapshot(entry)

    def _snapshot(self, entry: Path) -> Path | None:
        """The snapshot ``refs/main`` points to, if it holds a ``config.json``."""
        try:
            revision = (entry / "refs" / "main").read_text().strip()
        except OSError:
            return None
        snapshot = entry / "snapshots" / revision
        config = snapshot / "config.json"
        if revision.isalnum() and config.is_file() and _inside(config, self._hub):
            return snapshot
        return None


def _inside(config: Path, root: Path) -> bool:
    """Whether ``config`` and its folder, every symlink followed, lie under ``root``."""
    real = root.resolve()
    return all(path.resolve().is_relative_to(real) for path in (config, config.parent))
