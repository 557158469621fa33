"""Running the real daemon (``edge-recorder run``) in a subprocess, as a box would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def counter_signal(seconds: float, rate: int = 8000) -> np.ndarray:
    """Mono int16 whose value at frame i is i - 32768: every kept frame says where it came from."""
    n = int(seconds * rate)
    if n > 65536:
        raise ValueError("the counter wraps after 65536 frames")
    return (np.arange(n) - 32768).astype(np.int16)


def positions(frames: np.ndarray) -> np.ndarray:
    """Input frame index of each recorded frame of a counter signal."""
    return frames.astype(np.int64).reshape(-1) + 32768


def write_toml(path: Path, sections: dict) -> Path:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for key, value in keys.items():
            if not isinstance(value, dict):
                lines.append(f"{key} = {json.dumps(value)}")
        for key, value in keys.items():  # tables within the section: [destinations.NAME]
            if isinstance(value, dict):
                lines.append(f"[{name}.{key}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Box:
    """A state directory and config for one simulated box."""

    root: Path
    audio: Path
    sections: dict

    @classmethod
    def make(cls, root: Path, signal: np.ndarray, rate: int, **sections) -> Box:
        root.mkdir(parents=True, exist_ok=True)
        audio = root / "line.wav"
        sf.write(audio, signal, rate, subtype="PCM_16")
        channels = 1 if signal.ndim == 1 else signal.shape[1]
        base = {
            "device": {"id": "test-box"},
            "audio": {"sample_rate": rate, "channels": channels},
            "gpio": {},
            "recording": {"format": "wav", "sample_rate": rate},
            "spool": {"directory": str(root / "spool")},
            "catalog": {"path": str(root / "catalog.sqlite3")},
            "sim": {"enabled": True, "audio": str(audio), "pace": "fast"},
        }
        for name, keys in sections.items():
            base.setdefault(name, {}).update(keys)
        return cls(root, audio, base)

    @property
    def config(self) -> Path:
        return write_toml(self.root / "config.toml", self.sections)

    def argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "firmware.cli.main", "run", "--config", str(self.config), "--events", "-", *extra]

    def run(self, *extra: str, env: dict | None = None, timeout: float = 60) -> Result:
        proc = subprocess.run(
            self.argv(*extra),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        return Result(proc.returncode, events(proc.stdout), proc.stderr)

    def start(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(*extra),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def rows(self) -> list[dict]:
        db = sqlite3.connect(self.root / "catalog.sqlite3")
        db.row_factory = sqlite3.Row
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return [dict(r) for r in db.execute("SELECT * FROM recordings ORDER BY date_created")]
        finally:
            db.close()


@dataclass
class Result:
    code: int
    events: list[dict]
    stderr: str

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def audio_of(row: dict) -> np.ndarray:
    data, _ = sf.read(row["path"], dtype="int16", always_2d=True)
    return data
