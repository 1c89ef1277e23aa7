"""Writes the Colab notebooks experiments/*.ipynb (outputs empty) from the cells below.

    python -m scripts.make_notebooks

Each notebook: an "Open in Colab" badge, an install cell (a no-op where wow_jax imports), a
parameters cell (tagged `parameters`; SIZE = "tiny" runs random tiny models anywhere in about a
minute, "full" the real checkpoints), then markdown before every step saying what it does and how
long it takes. tests/test_notebooks.py executes them at tiny size and checks they equal this
script's output. REPOSITORY is the one place the repository's address is written.
"""

import pathlib

import nbformat

# PLACEHOLDER: the project has no public address yet (none in pyproject.toml or README.md); set it
# here and rerun this script to fix every badge and install cell.
REPOSITORY = "https://github.com/OWNER/wow_jax"
BRANCH = "main"
OUT_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def badge(name: str) -> str:
    path = REPOSITORY.removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{path}/blob/{BRANCH}/experiments/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


INSTALL_MD = """## Install
On Colab this pip-installs the repository (about 2 min); where `wow_jax` already imports (a
checkout, or a second run) it does nothing. Colab's TPU/GPU runtimes come with their JAX."""

INSTALL = f"""import importlib.util
import subprocess
import sys

REPOSITORY = "{REPOSITORY}"
if importlib.util.find_spec("wow_jax") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", f"git+{{REPOSITORY}}"])"""

RUNTIME_MD = """## Runtime
Which accelerator this kernel has (Runtime > Change runtime type on Colab: TPU v5e-1 / v6e-1 /
v2-8, a GPU, or CPU), ffmpeg for the inline videos, and JAX's compilation cache in the workdir
(programs compiled once are read back on a rerun or a kernel restart). Instant."""

RUNTIME = """import jax

from wow_jax import experiments, sharding

experiments.check_size(SIZE)
experiments.configure_mediapy()  # Shows videos inline (ffmpeg: the system's or imageio's).
experiments.enable_compilation_cache(f"{WORKDIR}/jax_cache")  # Reruns skip compiling.
print(experiments.describe_runtime())"""


def notebook(name: str, title: str, intro: str, parameters: str, steps: list[tuple[str, str]]):
    """The notebook: title + badge, install, parameters, runtime, then (markdown, code) steps."""
    cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n{badge(name)}\n\n{intro}"),
        nbformat.v4.new_markdown_cell(INSTALL_MD),
        nbformat.v4.new_code_cell(INSTALL),
        nbformat.v4.new_markdown_cell(
            '## Parameters\n`SIZE = "tiny"`: random tiny models on made-up data, runs anywhere '
            '(CPU included) in about a minute; `"full"`: the real models and your data (set the '
            "paths below; TPU or GPU)."
        ),
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_markdown_cell(RUNTIME_MD),
        nbformat.v4.new_code_cell(RUNTIME),
    ]
    for markdown, code in steps:
        cells.append(nbformat.v4.new_markdown_cell(markdown))
        cells.append(nbformat.v4.new_code_cell(code))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # Stable ids: the committed file equals this output.
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["accelerator"] = "TPU"
    nb.metadata["colab"] = {"provenance": []}
    return nb


QUICKSTART = notebook(
    "01_quickstart.ipynb",
    "01 · Quickstart: imagine a clip, read its actions",
    "Load a world model (Wan2.1 / WoW-1-Wan-14B converted from PyTorch), imagine a clip from one "
    "image and an instruction, and read the robot's actions off it with the inverse-dynamics "
    "model (IDM): mode `act` (`wow_jax/act.py`, docs/idm.md), run as the command line runs it.",
    """SIZE = "tiny"  # "tiny" or "full"
WORKDIR = "runs/quickstart"
PROMPT = "move the square right"
# SIZE = "full": the converted checkpoints (see "Checkpoints" below), your image and IDM run.
IMAGE = ""  # Conditioning frame (png/jpg); "tiny" makes one.
WORLD_MODEL = "/content/orbax"  # Folder of the converted dit / vae / umt5 / clip checkpoints.
IDM_RUN = ""  # A trained IDM run directory (docs/idm.md)""",
    [
        (
            "## Config and mesh\nThe model's config (`configs/tiny.py` made image-to-video, or "
            "`configs/wow14b.py`) and a mesh for this runtime: the batch over as many devices as "
            "divide it, the rest tensor-parallel (`sharding.fit_mesh`). Instant.",
            """from configs import tiny, wow14b

config = tiny.get_config() if SIZE == "tiny" else wow14b.get_config()
if SIZE == "tiny":
    config.model.dit.variant, config.model.dit.in_channels = "i2v", 36
    config.sample.solver, config.sample.steps, config.sample.guidance = "euler", 2, 1.0
config.mesh.update(sharding.fit_mesh(config.sample.batch_size, jax.device_count()))
print(sharding.make_mesh(config.mesh).shape)""",
        ),
        (
            "## Checkpoints\nFull size: convert the PyTorch release once (minutes per component, "
            "docs/checkpoints.md), e.g.\n```bash\npython -m wow_jax.main "
            "--config=configs/wow14b.py --config.mode=convert --config.convert.component=dit \\\n"
            "    --config.convert.source=/content/WoW-1-Wan-14B "
            "--config.convert.target=/content/orbax/dit\n```\n(likewise `vae`, `text` -> "
            "`umt5`, `clip`). Tiny: a run directory of random tiny weights, world model and IDM "
            "(`experiments.random_run`), about 5 s.",
            """import os

if SIZE == "tiny":
    world_model = experiments.random_run(config.copy_and_resolve_references(), f"{WORKDIR}/wm")
    idm_config = tiny.get_config()
    idm_config.train.task = "idm"
    idm_run = experiments.random_run(idm_config, f"{WORKDIR}/idm", names=("idm",))
    config.checkpoint.init_from = world_model
else:
    for name, folder in (("dit", "dit"), ("vae", "vae"), ("text", "umt5"), ("clip", "clip")):
        config.sample[f"{name}_checkpoint"] = os.path.join(WORLD_MODEL, folder)
    idm_run = IDM_RUN
config.act.idm_checkpoint = idm_run""",
        ),
        (
            "## A conditioning image\nTiny: the first frame of a made-up episode "
            "(`experiments.example_videos`). Instant.",
            """import mediapy

from wow_jax.data import videos

if SIZE == "tiny":
    size = config.data.height
    folder = experiments.example_videos(f"{WORKDIR}/videos", episodes=1, size=size)
    IMAGE = f"{WORKDIR}/frame.png"
    mediapy.write_image(IMAGE, videos.read_video(f"{folder}/episode_0.mp4")[0][0])
mediapy.show_image(mediapy.read_image(IMAGE), width=128)""",
        ),
        (
            "## Imagine, then act\nMode `act`: generate the clip (`config.sample`: solver, steps, "
            "guidance), then read one action per frame step with the IDM. Tiny: ~20 s on CPU "
            "(mostly compilation); full 14B at 81 frames 480p: compilation then several minutes "
            "per clip on one TPU v5e (not measured here).",
            """from wow_jax import main

config.mode = "act"
config.sample.image, config.sample.prompt = IMAGE, PROMPT
results = main.start(config, WORKDIR)""",
        ),
        (
            "## The imagined clip and its actions\nThe mp4 mode `act` wrote, and the actions the "
            "IDM read from it (`<job>_actions.json`, plotted in `<job>_actions.png`). Instant.",
            """import json

from IPython.display import Image, display

job = f"{WORKDIR}/generate/job_0"
mediapy.show_video(videos.read_video(f"{job}.mp4")[0], width=256, fps=config.sample.fps)
actions = json.load(open(f"{job}_actions.json"))
print(f"{actions['steps']} frame steps x {actions['action_dim']} action dims")
display(Image(f"{job}_actions.png"))""",
        ),
    ],
)

FINETUNE = notebook(
    "02_finetune.ipynb",
    "02 · Fine-tune on your own episodes",
    "Build a dataset from your episodes (a folder of mp4 files with captions, or RLDS), "
    "fine-tune the world model for a few steps while the loss curve is drawn, then imagine "
    "the same clip with the base and the fine-tuned model side by side (modes `train` and "
    "`generate`, docs/training.md, docs/data.md).",
    """SIZE = "tiny"  # "tiny" or "full"
WORKDIR = "runs/finetune"
STEPS = 6  # Training steps (full size: hundreds)
# SIZE = "full": your episodes and the base run or converted checkpoints.
VIDEO_DIR = ""  # mp4 files + captions.jsonl (wow_jax/data/videos.py); "tiny" makes one
RLDS_DIR = ""  # Or an RLDS / TFDS ArrayRecord dataset (data.source='tfds')
BASE = "/content/orbax"  # A run directory or converted checkpoint to fine-tune
TOKENIZER = "/content/umt5-xxl/spiece.model"  # umT5's sentencepiece model""",
    [
        (
            "## Config\n`configs/tiny.py` made image-to-video (full: `configs/wow14b.py`), the "
            "fine-tuning steps, and the mesh for this runtime (`sharding.fit_mesh`). Instant.",
            """from configs import tiny, wow14b

config = tiny.get_config() if SIZE == "tiny" else wow14b.get_config()
if SIZE == "tiny":
    config.model.dit.variant, config.model.dit.in_channels = "i2v", 36
    config.sample.solver, config.sample.steps, config.sample.guidance = "euler", 2, 1.0
config.train.steps, config.train.warmup_steps, config.train.log_every = STEPS, 1, 1
config.checkpoint.save_every = STEPS
config.mesh.update(sharding.fit_mesh(config.data.batch_size, jax.device_count()))""",
        ),
        (
            "## Your episodes\nTiny: eight made-up episodes of a square moving as the caption "
            "says (`experiments.example_videos`). The folder is converted into an RLDS ArrayRecord "
            "dataset under `WORKDIR/dataset` (`data.prepare.prepare_dataset`, what mode `train` "
            "does first); one clip of the training stream is shown. ~5 s for tiny; minutes per "
            "thousand full-size episodes.",
            """import mediapy

from wow_jax.data import pipeline, prepare, videos

if RLDS_DIR:
    config.data.source, config.data.path = "tfds", RLDS_DIR
else:
    if SIZE == "tiny":
        VIDEO_DIR = experiments.example_videos(
            f"{WORKDIR}/videos", episodes=8, frames=17, size=config.data.height
        )
    config.data.source, config.data.video_dir = "videos", VIDEO_DIR
    config.data.path = str(prepare.prepare_dataset(config.data, WORKDIR))
batch = next(pipeline.create_iterator(config.data, process_index=0, process_count=1))
print(batch["caption"][0])
mediapy.show_video((batch["video"][0] + 1) / 2, width=128, fps=4)""",
        ),
        (
            "## The base model\nFull size: `BASE`. Tiny: a run directory of random tiny weights "
            "(`experiments.random_run`). ~3 s.",
            """base, config.model.text.tokenizer_path = BASE, TOKENIZER
if SIZE == "tiny":  # Sets config.model.text.tokenizer_path to the run's tokenizer.
    base = experiments.random_run(config, f"{WORKDIR}/base") + "/checkpoints"
config.checkpoint.init_from = base""",
        ),
        (
            "## Fine-tune\nMode `train` (task `world_model`) from the base weights, as "
            "`python -m wow_jax.main --config.mode=train` runs it; the loss curve is redrawn every "
            "two seconds from the run's `metrics.jsonl` (`experiments.train_live`). Tiny: ~30 s on "
            "CPU (mostly compilation); full size: compilation, then seconds per step on a pod "
            "slice (docs/scaling.md).",
            """config.mode = "train"
run = experiments.train_live(config, f"{WORKDIR}/run")""",
        ),
        (
            "## Base vs fine-tuned\nMode `generate` twice from the same first frame, prompt and "
            "seed: once with the base weights, once with the fine-tuned run (which describes "
            "itself: no model flags). Tiny: ~15 s each on CPU.",
            """from wow_jax import main

frame = f"{WORKDIR}/frame.png"
mediapy.write_image(frame, ((batch["video"][0, 0] + 1) * 127.5).astype("uint8"))
clips = {}
for name, weights in (("base", base), ("fine-tuned", run)):
    sample = config.copy_and_resolve_references()
    sample.mode, sample.checkpoint.init_from = "generate", weights
    sample.sample.image, sample.sample.prompt = frame, str(batch["caption"][0])
    sample.sample.output_dir = f"{WORKDIR}/generate_{name}"
    main.start(sample, WORKDIR)
    clips[name] = videos.read_video(f"{WORKDIR}/generate_{name}/job_0.mp4")[0]
mediapy.show_videos(clips, width=192, fps=config.sample.fps)""",
        ),
    ],
)

EXPORT = notebook(
    "03_export.ipynb",
    "03 · Export to PyTorch (Wan-native and diffusers)",
    "A fine-tuned JAX checkpoint -> the DiT as Wan-native safetensors and as a diffusers folder, "
    "the VAE as a diffusers folder (mode `convert`, direction `export`, docs/checkpoints.md) -> "
    "both loaded in PyTorch by diffusers, denoising the same noise into the same frames.",
    """SIZE = "tiny"  # "tiny" or "full"
WORKDIR = "runs/export"
# SIZE = "full": a fine-tuned run (notebook 02) and the config it was trained with.
RUN = "/content/runs/finetune/run"  # Run directory, or a checkpoint of it
FRAMES, STEPS = 5, 4  # Frames and denoising steps of the PyTorch comparison""",
    [
        (
            "## PyTorch\nThe export needs no PyTorch; loading it back does (CPU torch is enough "
            "for tiny). A no-op where both import.",
            """import importlib.util

for package in ("torch", "diffusers"):
    if importlib.util.find_spec(package) is None:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])""",
        ),
        (
            "## The checkpoint\nFull size: the fine-tuned run `RUN`. Tiny: a run directory of "
            "random tiny text-to-video weights standing in for it (`experiments.random_run`). "
            "~2 s.",
            """from configs import tiny, wow14b

config = tiny.get_config() if SIZE == "tiny" else wow14b.get_config()
config.mesh.update(sharding.fit_mesh(1, jax.device_count()))
run = RUN
if SIZE == "tiny":
    run = experiments.random_run(config.copy_and_resolve_references(), f"{WORKDIR}/run")""",
        ),
        (
            "## Export\nMode `convert` with `direction=export`, as on the command line:\n```bash\n"
            "python -m wow_jax.main --config=configs/wow14b.py --config.mode=convert "
            "--config.convert.direction=export \\\n    --config.convert.component=dit "
            "--config.convert.naming=wan --config.convert.source=RUN --config.convert.target=OUT\n"
            "```\nThe DiT with Wan-native names and as a diffusers folder, the VAE as a diffusers "
            "folder, in float32. Tiny: ~5 s; 14B: minutes (streamed shard by shard).",
            """import os

from wow_jax import main

folders = {
    "dit_wan": ("dit", "wan"),
    "dit_diffusers": ("dit", "diffusers"),
    "vae_diffusers": ("vae", "diffusers"),
}
for folder, (component, naming) in folders.items():
    export = config.copy_and_resolve_references()
    export.mode = "convert"
    export.convert.direction, export.convert.component = "export", component
    export.convert.naming, export.convert.dtype = naming, "float32"
    export.convert.source, export.convert.target = run, f"{WORKDIR}/{folder}"
    export.convert.overwrite = True
    main.start(export, WORKDIR)
for folder in folders:
    print(folder, sorted(os.listdir(f"{WORKDIR}/{folder}")))""",
        ),
        (
            "## Load in diffusers\nThe diffusers folder with `from_pretrained`; the Wan-native "
            "file with diffusers' own converter of Wan releases (`from_single_file`, given the "
            "diffusers config). Both hold the same tensors. ~2 s.",
            """import glob

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from_diffusers = WanTransformer3DModel.from_pretrained(f"{WORKDIR}/dit_diffusers").eval()
wan_file = sorted(glob.glob(f"{WORKDIR}/dit_wan/*.safetensors"))[0]
from_wan = WanTransformer3DModel.from_single_file(
    wan_file, config=f"{WORKDIR}/dit_diffusers"
).eval()
vae = AutoencoderKLWan.from_pretrained(f"{WORKDIR}/vae_diffusers").eval()
ours, converted = from_diffusers.state_dict(), from_wan.state_dict()
same = ours.keys() == converted.keys() and all(torch.equal(ours[k], converted[k]) for k in ours)
print(f"{len(ours)} tensors, the same in both: {same}")
assert same""",
        ),
        (
            "## Same frames\ndiffusers' `WanPipeline` with each transformer, the exported VAE and "
            "fixed text states (the umT5 export is `convert.component=text`), from the same "
            "noise: the same frames up to float32 rounding. Tiny: ~5 s on CPU.",
            """import mediapy
import numpy as np
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

dit = config.model.dit
text_states = torch.randn(1, dit.text_len, dit.text_dim, generator=torch.manual_seed(0))
frames = {}
for name, transformer in (("diffusers", from_diffusers), ("wan-native", from_wan)):
    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=config.sample.shift),
    )
    frames[name] = pipe(
        prompt_embeds=text_states, negative_prompt_embeds=torch.zeros_like(text_states),
        height=config.data.height, width=config.data.width, num_frames=FRAMES,
        num_inference_steps=STEPS, generator=torch.manual_seed(0), output_type="np",
    ).frames[0]
difference = np.abs(frames["diffusers"] - frames["wan-native"]).max()
print(f"{frames['diffusers'].shape} frames; largest difference {difference}")
assert difference < 1e-5  # Float32 rounding of the [0, 1] frames.
mediapy.show_videos(frames, width=128, fps=4)""",
        ),
    ],
)

CLOSED_LOOP = notebook(
    "04_closed_loop.ipynb",
    "04 · Closed loop in Meta-World, stage by stage",
    "The CPU demo (`configs/demo.py`, `wow_jax/demo.py`, docs/demo.md), one stage per cell: "
    "collect Meta-World episodes, train the tiny VAE, cache latents, train the world model, "
    "imagine held-out clips, train the IDM, then imagine -> act -> re-plan in the simulator, "
    "and the report's tables and gifs. Each stage reuses its outputs when rerun.",
    """SIZE = "tiny"  # "tiny": below configs/demo.py:quick (~3 min CPU); "full": configs/demo.py
WORKDIR = "runs/closed_loop\"""",
    [
        (
            "## Config\n`configs/demo.py` (full) or its `quick` variant made smaller still "
            "(one task, a few steps per stage, one closed-loop episode per policy). Instant.",
            """import os

from configs import demo as demo_config
from wow_jax import demo, evaluate, report

config = demo_config.get_config(None if SIZE == "full" else "quick")
if SIZE == "tiny":
    config.data.num_frames, config.data.episode_length, config.data.frame_stride = 5, 12, 3
    config.train.steps, config.train.eval_every, config.train.log_every = 4, 4, 2
    config.checkpoint.save_every = 4
    config.demo.vae_steps, config.demo.idm_steps, config.demo.clips = 4, 4, 4
    config.sample.steps, config.sample.guidance = 2, 1.0
    config.evaluate.episodes_per_task, config.evaluate.batch = 1, 1
    config.evaluate.policies = ("imagine_act", "expert", "zero")
    config.sophia.candidates, config.sophia.rounds, config.sophia.episodes_per_task = 1, 1, 1
    config.idm.eval_batch = 8
config.mesh.update(sharding.fit_mesh(config.data.batch_size, jax.device_count()))
demo.check_vae_frames(config)""",
        ),
        (
            "## Collect\nScripted-expert Meta-World episodes rendered offscreen (MuJoCo EGL), "
            "training and held-out clips with mixture captions. Tiny: ~5 s on 2 CPU cores.",
            """clips, heldout = demo.collect(config, WORKDIR)
import mediapy

print(len(clips["video"]), "training clips,", len(heldout["video"]), "held-out")
print(clips["caption"][0])
mediapy.show_video((clips["video"][0] + 1) / 2, width=128, fps=4)""",
        ),
        (
            "## VAE\nThe tiny causal VAE on random crops. Tiny: ~60 s on 2 CPU cores, nearly all "
            "compilation.",
            """vae_params, vae_step = demo.train_vae(config, WORKDIR, clips)
encoders = {"vae": vae_params, **demo.frozen_encoders(config)}""",
        ),
        (
            "## Cache\nOne VAE encode per clip (latent statistics), a tokenizer on the captions, "
            "caption states and CLIP tokens. Tiny: ~10 s.",
            """config, cache, held_cache = demo.build_cache(
    config, WORKDIR, encoders, vae_step, clips, heldout
)""",
        ),
        (
            "## World model\nThe image-to-video DiT on the cache. Tiny: ~30 s (compilation).",
            """params, step = demo.train_world_model(config, WORKDIR, encoders, cache, held_cache)
train = config.train
wm_config = demo.stage_config(config, "world_model", train.steps, train.learning_rate)""",
        ),
        (
            "## Imagine\nEvery held-out clip from its first frame and instruction, against "
            "copy-first-frame and the VAE's reconstruction. Tiny: ~15 s.",
            """imagined = demo.imagine(wm_config, WORKDIR, params, step, heldout)""",
        ),
        (
            "## IDM\nThe FM-IDM on the training episodes, scored on held-out ones, replayed in the "
            "simulator. Tiny: ~20 s.",
            """idm_report = demo.train_idm(config, WORKDIR)""",
        ),
        (
            "## Closed loop\nImagine -> act -> re-plan in the simulator against the expert and "
            "zero actions, the imagination gap and SOPHIA's prompt refinement. Tiny: ~25 s.",
            """closed_loop, gap, refined = demo.evaluate_closed_loop(
    wm_config, WORKDIR, params, step, idm_report
)
print(evaluate.format_table(closed_loop))""",
        ),
        (
            "## Report\nThe demo's report (`wow_jax/report.py`; `report.html` and `summary.md` in "
            "the workdir): its tables, then the gifs (real | imagined held-out clips; imagined | "
            "executed closed-loop episodes). Instant.",
            """import glob

from IPython.display import Image, Markdown, display

paths = report.write_report(WORKDIR)
display(Markdown(open(paths["markdown"]).read()))
gifs = sorted(glob.glob(f"{WORKDIR}/imagined/*.gif"))
gifs += sorted(glob.glob(f"{WORKDIR}/{evaluate.EVAL_DIR}/**/*.gif", recursive=True))
for gif in gifs:
    print(os.path.relpath(gif, WORKDIR))
    display(Image(filename=gif))""",
        ),
    ],
)

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_finetune.ipynb": FINETUNE,
    "03_export.ipynb": EXPORT,
    "04_closed_loop.ipynb": CLOSED_LOOP,
}


def main():
    OUT_DIR.mkdir(exist_ok=True)
    for name, nb in NOTEBOOKS.items():
        nbformat.write(nb, OUT_DIR / name)
        print(OUT_DIR / name)


if __name__ == "__main__":
    main()
