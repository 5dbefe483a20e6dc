"""The ``ipsb`` commands the documentation gives, as typed, and the registry of the tests that run them.

A documented command is

* in a file under ``lightning_configs/`` (the YAML configs, the SLURM script): a whole-line comment
  whose text starts with ``ipsb ``
  (continued on the next comment line when it ends in ``\\``), or a backticked span `` `ipsb ...` ``
  in a comment that has arguments after the subcommand (a bare `` `ipsb swap` `` names a subcommand);
* in a Markdown file of :data:`DOC_FILES`: a line of a fenced code block whose first word is ``ipsb``
  (continued likewise), or a backticked span as above.

Text after `` # `` on a command line is a remark, not part of the command; whitespace is collapsed.
A pattern is not a command: text with a ``...`` or ``<placeholder>`` (``ipsb fit --config
lightning_configs/....yaml``, ``ipsb <command>: error: ...``).
``[...]`` marks optional options (``[--trainer.devices 4 --trainer.strategy ddp]``).

:data:`COVERED` maps every documented command to the chain that runs it (``"toy"`` or
``"standin"``, :mod:`helpers.chains`). A chain runs only registered commands and must run every
command registered to it (``tests/cli/test_cli_chain.py``); ``test_documented_commands_are_covered``
fails when a documented command has no entry (a new comment without a test) or an entry is no
longer documented.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / "lightning_configs"
#: Markdown files whose commands must be run by a test (besides every config under lightning_configs/).
DOC_FILES = (REPO / "README.md", REPO / "checkpoints" / "README.md")

_BACKTICKED = re.compile(r"`(ipsb [^`]+)`")


@dataclass(frozen=True)
class Documented:
    """One documented command: its normalised text and where it is written (``file:line``)."""

    command: str
    where: str


def normalise(text: str) -> str:
    """Drop a trailing `` # remark`` and collapse whitespace."""
    text = re.split(r"\s#\s", " " + text + " ", maxsplit=1)[0]
    return " ".join(text.split())


def _is_command(text: str) -> bool:
    """``ipsb <subcommand> <something>``: a command, not a mention of a subcommand nor a pattern."""
    return len(text.split()) > 2 and not _is_pattern(text)


def _is_pattern(text: str) -> bool:
    return "..." in text or re.search(r"<[^>]+>", text) is not None


def _joined(lines: list[str], start: int) -> tuple[str, int]:
    """The command starting at ``lines[start]``, joined over ``\\`` continuations; -> (text, next index)."""
    parts, i = [lines[start]], start
    while parts[-1].rstrip().endswith("\\") and i + 1 < len(lines):
        parts[-1] = parts[-1].rstrip()[:-1]
        i += 1
        parts.append(lines[i])
    return " ".join(parts), i + 1


def _commands_in(texts: list[str], is_code: list[bool], where: str) -> list[Documented]:
    out, i = [], 0
    while i < len(texts):
        text = texts[i]
        if is_code[i] and text.strip().startswith("ipsb "):
            command, nxt = _joined([t.strip() for t in texts], i)
            if not _is_pattern(normalise(command)):
                out.append(Documented(normalise(command), f"{where}:{i + 1}"))
            i = nxt
            continue
        for span in _BACKTICKED.findall(text):
            if _is_command(span):
                out.append(Documented(normalise(span), f"{where}:{i + 1}"))
        i += 1
    return out


def yaml_comment_commands(path: Path) -> list[Documented]:
    """Commands in the whole-line ``#`` comments of a YAML file or a shell script (module docstring)."""
    texts, code = [], []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        body = stripped[1:].strip() if stripped.startswith("#") else ""
        texts.append(body)
        code.append(bool(body))
    return _commands_in(texts, code, path.relative_to(REPO).as_posix())


def markdown_commands(path: Path) -> list[Documented]:
    """Commands in the fenced code blocks and backticked spans of a Markdown file."""
    texts, code, fenced = [], [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            texts.append("")
            code.append(False)
            continue
        texts.append(line)
        code.append(fenced)
    return _commands_in(texts, code, path.relative_to(REPO).as_posix())


def documented_commands() -> list[Documented]:
    """Every documented command (module docstring), in file order."""
    out = []
    for path in sorted(p for p in CONFIG_ROOT.rglob("*") if p.is_file()):
        out += yaml_comment_commands(path)
    for path in DOC_FILES:
        out += markdown_commands(path)
    return out


#: documented command -> the chain of :mod:`helpers.chains` that runs it.
COVERED: dict[str, str] = {
    # toy world (lightning_configs/toy/, eval/ffpp_toy.yaml)
    "ipsb predict --config lightning_configs/toy/invert.yaml --data.init_args.root path/to/toy/photos": "toy",
    "ipsb fit --config lightning_configs/toy/basis.yaml": "toy",
    "ipsb fit --config lightning_configs/toy/mapping.yaml": "toy",
    "ipsb fit --config lightning_configs/toy/detail.yaml": "toy",
    "ipsb fit --config lightning_configs/toy/blend.yaml": "toy",
    "ipsb swap --source A.png --target B.png --out C.png --mapping outputs/toy/mapping/checkpoints/last.ckpt "
    "--detail outputs/toy/detail/checkpoints/last.ckpt --blend outputs/toy/blend/checkpoints/last.ckpt": "toy",
    "ipsb swap --source A.png --target clip.mp4 --out swapped.mp4 --mapping outputs/toy/mapping/checkpoints/last.ckpt "
    "--detail outputs/toy/detail/checkpoints/last.ckpt --blend outputs/toy/blend/checkpoints/last.ckpt": "toy",
    "ipsb demo --train": "toy",
    "ipsb align photo.jpg --out aligned/": "toy",
    "ipsb edit --seed 3 --out edits.png": "toy",
    "ipsb edit --seed 3 --set yaw+=20 --set smile=0.5 --out control.png": "toy",
    "ipsb edit --seed 3 --transfer exp,pose --reference seed:7 --out transfer.png": "toy",
    "ipsb test --config lightning_configs/eval/ffpp_toy.yaml": "toy",
    # official configs on the stand-in checkpoints
    "ipsb align path/to/photos --out data/ffhq/images1024x1024 --size 1024": "standin",
    "ipsb predict --config lightning_configs/invert.yaml --data.init_args.root data/ffhq/images1024x1024": "standin",
    "ipsb fit --config lightning_configs/basis.yaml [--trainer.devices 4 --trainer.strategy ddp]": "standin",
    "ipsb fit --config lightning_configs/basis.yaml": "standin",
    "ipsb fit --config lightning_configs/mapping.yaml [--trainer.devices 4 --trainer.strategy ddp]": "standin",
    "ipsb fit --config lightning_configs/mapping.yaml": "standin",      # the same, run in the form above
    "ipsb fit --config lightning_configs/detail.yaml": "standin",
    "ipsb fit --config lightning_configs/blend.yaml": "standin",
    "ipsb swap --source A.jpg --target B.jpg --out C.png --backbone lightning_configs/backbone/ffhq1024.yaml "
    "--mapping outputs/ffhq1024/mapping/checkpoints/last.ckpt --detail outputs/ffhq1024/detail/checkpoints/last.ckpt "
    "--blend outputs/ffhq1024/blend/checkpoints/last.ckpt": "standin",
    "ipsb test --config lightning_configs/eval/ffpp.yaml --data.init_args.root /path/to/FaceForensics++": "standin",
    "ipsb test --config lightning_configs/eval/ffpp.yaml --data.init_args.root /path/to/FaceForensics++ "
    "--model.init_args.methods+=ipsb.eval.methods.IpsbSwapper "
    "--model.init_args.methods.init_args.backbone lightning_configs/backbone/ffhq1024.yaml "
    "--model.init_args.methods.init_args.mapping_ckpt outputs/ffhq1024/mapping/checkpoints/last.ckpt "
    "--model.init_args.methods.init_args.detail_ckpt outputs/ffhq1024/detail/checkpoints/last.ckpt "
    "--model.init_args.methods.init_args.blend_ckpt outputs/ffhq1024/blend/checkpoints/last.ckpt": "standin",
    "ipsb test --config lightning_configs/eval/celebahq.yaml --data.init_args.image_root /path/to/CelebA-HQ/images "
    "--data.init_args.pairs_file pairs.txt --data.init_args.swaps /path/to/swaps "
    "--model.init_args.data_swaps_name MyMethod": "standin",
    "ipsb test --config lightning_configs/eval/celebahq.yaml --data.init_args.image_root /path/to/CelebA-HQ/images "
    "--data.init_args.pairs_file pairs.txt --data.init_args.swaps null "
    "--model.init_args.methods+=ipsb.eval.methods.IpsbSwapper "
    "--model.init_args.methods.init_args.backbone lightning_configs/backbone/ffhq1024.yaml "
    "--model.init_args.methods.init_args.mapping_ckpt outputs/ffhq1024/mapping/checkpoints/last.ckpt "
    "--model.init_args.methods.init_args.detail_ckpt outputs/ffhq1024/detail/checkpoints/last.ckpt "
    "--model.init_args.methods.init_args.blend_ckpt outputs/ffhq1024/blend/checkpoints/last.ckpt": "standin",
}


def coverage_gaps(documented: list[Documented]) -> tuple[dict[str, list[str]], set[str]]:
    """``(missing, stale)``: documented commands no chain runs (command -> where written), and
    registered commands no longer documented."""
    where: dict[str, list[str]] = {}
    for d in documented:
        where.setdefault(d.command, []).append(d.where)
    return {c: w for c, w in where.items() if c not in COVERED}, set(COVERED) - set(where)


def registered(command: str, chain: str) -> str:
    """``command`` (normalised) if it is documented and registered to ``chain``; AssertionError otherwise."""
    command = normalise(command)
    assert COVERED.get(command) == chain, f"not registered to the {chain!r} chain: {command}"
    assert command in {d.command for d in documented_commands()}, f"no longer documented: {command}"
    return command


__all__ = ["Documented", "documented_commands", "coverage_gaps", "yaml_comment_commands", "markdown_commands", "normalise",
           "COVERED", "DOC_FILES", "registered"]
