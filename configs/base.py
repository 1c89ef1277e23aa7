"""Shared defaults for every wow_jax config.

Each config file (tiny, demo, wan1_3b, wan_i2v14b, wow14b) starts from `get_config()` here (or
from another config) and changes only what differs. The returned ConfigDict is locked: assigning
a key that does not exist here raises, so a typo in a config file or a `--config.key=value` flag
is an error, never a silent new field.
Model sizes default to Wan2.1-1.3B text-to-video; the video geometry defaults to a small clip.
"""

import ml_collections

# Published per-channel statistics of the Wan2.1 VAE latents (diffusers AutoencoderKLWan config).
WAN_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

# Negative prompt of the Wan2.1 repository (wan/configs/shared_config.py, sample_neg_prompt), in
# English: bright colors, overexposed, static, blurred details, subtitles, style, artwork,
# painting, picture, still, overall gray, worst quality, low quality, JPEG compression residue,
# ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured,
# malformed limbs, fused fingers, still picture, cluttered background, three legs, many people in
# the background, walking backwards.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# Wan2.1 I2V-14B prefixes it with "camera shake, " (wan/configs/wan_i2v_14B.py).
WAN_I2V_NEGATIVE_PROMPT = "镜头晃动，" + WAN_NEGATIVE_PROMPT
# WoW's released inference (its DiffSynth WanVideoPipeline demo).
WOW_NEGATIVE_PROMPT = "low quality, distorted, ugly, bad anatomy"


def _dit() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.variant = "t2v"  # 't2v' (text-to-video, 16 input channels) or 'i2v' (image-to-video, 36).
    c.in_channels = 16  # Patch-embedding input: z (t2v); i2v: z + VAE temporal stride + z = 36.
    c.out_channels = 16  # Latent channels predicted (velocity).
    c.dim = 1536  # Transformer width.
    c.ffn_dim = 8960  # Feed-forward hidden width.
    c.freq_dim = 256  # Sinusoidal timestep embedding width.
    c.text_dim = 4096  # Width of the text encoder states (umT5-XXL).
    c.text_len = 512  # Text tokens attended to: shorter text_states are zero-padded (Wan's).
    c.image_dim = 1280  # Width of the CLIP image tokens (i2v only).
    c.num_heads = 12  # Attention heads.
    c.num_layers = 30  # Transformer blocks.
    c.patch_size = (1, 2, 2)  # Patch size over (frames, height, width) of the latent.
    c.qk_norm = True  # RMSNorm on queries and keys.
    c.cross_attn_norm = True  # LayerNorm before cross-attention.
    c.eps = 1e-6  # Norm epsilon.
    c.rope_max_len = 1024  # Longest position per axis covered by the rotary tables.
    c.param_dtype = "float32"  # Dtype parameters are stored in.
    c.dtype = "float32"  # Compute dtype ('bfloat16' on TPU/GPU for speed).
    c.scan_layers = True  # nn.scan over blocks (stacked params with a 'layers' axis).
    # Rematerialisation of each block in the backward pass; what the forward pass keeps:
    #   'none'                 everything (no remat; most memory)
    #   'full'                 nothing: the whole block is recomputed (least memory)
    #   'dots_saveable'        every matmul output
    #   'dots_no_batch'        matmul outputs without batch dims: the projections, not attention
    #                          (with scanned blocks less memory than 'none' and on CPU 1.4x faster,
    #                          as nn.scan stacks every saved intermediate per layer)
    #   'save_attention_out'   the self-/cross-attention outputs after `o` (named tensors)
    #   'save_ffn_in'          the feed-forward input
    #   'save_attention_out_ffn_in'  both of the above
    #   'save_qkv_attention_out'     self-attention q/k/v and the attention outputs
    #   'offload_block_input'  nothing on device: each block's input goes to host memory (TPU/GPU)
    c.remat_policy = "dots_no_batch"
    # Attention kernel: 'xla', 'cudnn' (GPU flash), 'splash' (TPU Pallas), or 'auto' (resolved
    # for the compile target: splash on TPU, cudnn on GPU, xla on CPU).
    c.attention = "xla"
    c.pallas_interpret = False  # Splash in the Pallas interpreter; set for non-TPU targets.
    c.cpu_kernels = False  # CPU fusion barriers + attention backward; set from model.cpu_kernels.
    return c


def _vae() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.base_dim = 96  # Channels of the first encoder stage.
    c.z_dim = 16  # Latent channels.
    c.dim_mult = (1, 2, 4, 4)  # Channel multiplier per stage.
    c.num_res_blocks = 2  # Residual blocks per stage.
    c.attn_scales = ()  # Scales with attention (empty in Wan2.1).
    c.temporal_downsample = (False, True, True)  # Which down stages also halve time.
    c.latents_mean = WAN_LATENTS_MEAN  # Per-channel latent mean for normalisation.
    c.latents_std = WAN_LATENTS_STD  # Per-channel latent std for normalisation.
    c.tile = False  # Spatial tiling for large frames.
    c.tile_size = 256  # Tile size in pixels when tiling.
    c.tile_overlap = 32  # Overlap in pixels blended between tiles.
    c.param_dtype = "float32"  # Dtype parameters are stored in.
    c.dtype = "float32"  # Compute dtype.
    c.cpu_kernels = False  # 3D convs as 2D convs per temporal tap; set from model.cpu_kernels.
    return c


def _text() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.vocab_size = 256384  # umT5 vocabulary.
    c.dim = 4096  # Encoder width.
    c.ffn_dim = 10240  # Gated-GELU hidden width.
    c.num_heads = 64  # Attention heads.
    c.head_dim = 64  # Width of one head.
    c.num_layers = 24  # Encoder blocks.
    c.num_buckets = 32  # Relative-position buckets.
    c.max_distance = 128  # Largest relative distance with its own bucket range.
    c.text_len = 512  # Tokens per caption after padding/truncation.
    c.tokenizer_path = ""  # Local path of the umT5 sentencepiece model (spiece.model).
    c.checkpoint_path = ""  # umT5 encoder weights (.pth / .safetensors) for scripts; '' = random.
    c.checkpoint_naming = "wan"  # Tensor names in checkpoint_path: 'wan' (Wan2.1 .pth) or 'hf'.
    c.embedding_cache = ""  # TextEmbeddingCache directory to read captions from; '' = run umT5.
    c.cache_dtype = "bfloat16"  # Dtype embeddings are stored in by the cache writer.
    c.param_dtype = "float32"  # Dtype parameters are stored in.
    c.dtype = "float32"  # Compute dtype.
    return c


def _clip() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.image_size = 224  # Input resolution.
    c.patch_size = 14  # ViT patch size.
    c.width = 1280  # ViT width.
    c.num_layers = 32  # ViT blocks (Wan uses the penultimate block's tokens).
    c.num_heads = 16  # Attention heads.
    c.mlp_dim = 5120  # MLP hidden width.
    c.activation = "gelu"  # MLP activation: 'gelu' (Wan's ViT-H/14) or 'quick_gelu' (OpenAI CLIP).
    c.checkpoint_path = ""  # CLIP weights (.pth / .safetensors); '' = random init.
    c.checkpoint_naming = "wan"  # Tensor names in checkpoint_path: 'wan' (Wan2.1 .pth) or 'hf'.
    c.param_dtype = "float32"  # Dtype parameters are stored in.
    c.dtype = "float32"  # Compute dtype.
    return c


def _dinov2() -> ml_collections.ConfigDict:
    """DINOv2 ViT (wow_jax/models/dinov2.py); defaults: facebook/dinov2-small (ViT-S/14)."""
    c = ml_collections.ConfigDict()
    c.image_size = 518  # Input size the positions are learned for (interpolated to other sizes).
    c.patch_size = 14  # ViT patch size; inputs must be multiples of it.
    c.width = 384  # ViT width (hidden_size): 384 S, 768 B, 1024 L.
    c.num_layers = 12  # ViT blocks (num_hidden_layers).
    c.num_heads = 6  # Attention heads.
    c.mlp_dim = 1536  # MLP hidden width (hidden_size * mlp_ratio).
    c.param_dtype = "float32"  # Dtype parameters are stored in.
    c.dtype = "float32"  # Compute dtype.
    return c


def _idm() -> ml_collections.ConfigDict:
    """The FM-IDM (wow_jax/models/idm.py): frames t and t+k, flow and mask -> action."""
    c = ml_collections.ConfigDict()
    c.action_dim = 4  # Dataset action size (action_stats.json): 4 Meta-World, 7 real arms.
    c.gripper_index = 3  # Action index of the gripper, an open/close classifier (-1 = none).
    c.width = 32  # Channels of the frame encoder's first stage (shared by both frames).
    c.motion_width = 16  # Channels of the motion branch's first stage (reads flow and mask).
    c.stage_mult = (1, 2, 4)  # Channel multiplier per stride-2 stage of both encoders.
    c.num_blocks = 1  # Residual blocks per stage.
    c.norm_groups = 8  # GroupNorm groups (must divide every stage's channels).
    c.fuse_width = 64  # Channels of the 1x1 conv fusing frame and motion features per cell.
    c.pool_grid = 4  # Fused maps are average-pooled to pool_grid x pool_grid cells, flattened.
    c.mlp_dim = 256  # Hidden width of the fusion MLP before the action heads.
    c.flow_scale = 4.0  # Flow (pixels) is divided by this at the motion branch's input.
    c.motion = "dis"  # Motion branch input: 'dis' (host OpenCV flow + mask) or 'learned' (frames).
    c.encoder = "conv"  # Frame encoder: 'conv' (from scratch) or 'dinov2' (imported, `dinov2`).
    c.dinov2 = _dinov2()  # encoder='dinov2': the ViT's sizes (as config.model.dinov2's fields).
    c.dinov2_checkpoint = ""  # encoder='dinov2': Orbax DINOv2 params (mode convert); '' = random.
    c.freeze_encoder = True  # encoder='dinov2': keep the imported ViT fixed (False: fine-tune).
    c.param_dtype = "float32"  # Dtype parameters are stored in.
    c.dtype = "float32"  # Compute dtype.
    return c


def _data() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.source = (
        "metaworld"  # 'metaworld' (collect), 'tfds' (ArrayRecord RLDS), 'videos' (mp4+captions).
    )
    c.path = ""  # Dataset directory ('' = <workdir>/data).
    c.video_dir = ""  # source='videos': folder of mp4 files + captions.json(l) converted into path.
    c.image_key = "observation.image"  # Dotted step key of the camera used for clips.
    c.action_key = "action"  # Dotted step key of the action (OXE dicts are concatenated).
    c.instruction_key = "language_instruction"  # Dotted step key of the language instruction.
    c.num_frames = 9  # Frames per clip; must be 1+4k (VAE causal chunks).
    c.height = 64  # Clip height in pixels; divisible by 8 (VAE) x patch height.
    c.width = 64  # Clip width in pixels; divisible by 8 (VAE) x patch width.
    c.frame_stride = 1  # Take every n-th recorded frame.
    c.fps = 0.0  # Target clip fps (> 0: stride = episode fps / fps where recorded; 0 = stride).
    c.crop = "center"  # Fit to height x width: 'center' / 'random' crop after resize, 'resize'.
    c.action_reduce = "first"  # Action per frame pair when stride > 1: 'first', 'mean', 'sum'.
    c.action_norm = "mean_std"  # Action normalisation (action_stats.json): mean_std, q99, none.
    c.on_bad_episode = "skip"  # Bad episodes / videos: 'skip' (warned, counted) or 'raise'.
    c.batch_size = 2  # Global batch size; train/demo: divisible by processes and mesh data*fsdp.
    c.shuffle_seed = 0  # Seed of the episode shuffle.
    c.worker_count = 0  # Grain worker processes (0 = in-process).
    c.prefetch_buffer = 2  # Batches read ahead per worker process and by the read threads.
    c.read_threads = 1  # Threads reading episodes in each process (0 = none).
    c.caption_long_prob = 0.5  # Mixture captions: P(long scene+motion prompt) vs short.
    c.caption_fine_prob = 0.3  # Mixture captions: P(fine per-segment description) vs instruction.
    c.caption_robot_probs = (0.4, 0.3, 0.3)  # P(robot model name, 'the end-effector', 'the robot').
    c.robot_name = "the robot arm"  # Robot model named in captions when an episode records none.
    c.tasks = ("reach-v3",)  # Meta-World tasks to collect.
    c.episodes_per_task = 4  # Meta-World episodes per task.
    c.episode_length = 64  # Steps per collected episode.
    c.action_noise = 0.0  # Std of Gaussian noise added to the scripted expert actions.
    c.collect_seed = 0  # Meta-World collection seed (goal/object positions and noise).
    c.camera = "corner"  # Meta-World camera rendered for the frames.
    c.render_size = 0  # Meta-World render resolution (0 = max(height, width)).
    return c


def _train() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "world_model"  # What is trained: 'world_model' (DiT), 'vae' or 'idm' (config.idm).
    c.inputs = "pixels"  # World model: 'pixels' (frozen encoders in the step) or 'latents'.
    c.latent_cache = ""  # inputs='latents': the cache directory scripts/cache_latents.py wrote.
    c.steps = 1000  # Optimizer steps (>= 1).
    c.learning_rate = 1e-4  # Peak learning rate (> 0).
    c.warmup_steps = 100  # Linear warmup steps (0 <= warmup_steps <= steps).
    c.schedule = "cosine"  # 'cosine' or 'constant' after warmup.
    c.weight_decay = 0.01  # AdamW weight decay.
    c.clip_norm = 1.0  # Global gradient norm clip (> 0).
    c.grad_accum = 1  # Micro-batches accumulated per update (optax.MultiSteps).
    c.ema_decay = 0.0  # EMA of params, in [0, 1) (0 = off).
    c.timestep_sampling = "logit_normal"  # 'uniform' or 'logit_normal'.
    c.shift = 5.0  # Flow-matching sigma shift.
    c.text_dropout = 0.1  # Probability of replacing the caption by the empty prompt (for CFG).
    c.max_bad_steps = 5  # Consecutive NaN/Inf steps before the run halts (>= 1).
    c.log_every = 10  # Steps between console/TensorBoard logs (>= 1).
    c.eval_every = 0  # Steps between eval-loss passes (0 = off).
    c.eval_batches = 2  # Batches averaged per eval-loss pass.
    c.logit_mean = 0.0  # Mean of the logit-normal timestep density.
    c.logit_std = 1.0  # Std of the logit-normal timestep density.
    c.loss_weighting = "none"  # Per-sample loss weight: 'none', 'sigma_sqrt', 'cosmap' (SD3).
    c.final_lr_ratio = 0.0  # Cosine schedule ends at learning_rate * final_lr_ratio.
    c.adam_b1 = 0.9  # AdamW beta1, in [0, 1).
    c.adam_b2 = 0.999  # AdamW beta2, in [0, 1).
    c.adam_eps = 1e-8  # AdamW epsilon (> 0).
    c.freeze = (
        "auto"  # Regex on 'a/b/c' param paths kept fixed; 'auto' = the task's frozen encoders.
    )
    c.kl_weight = 1e-4  # VAE task: weight of the per-latent-cell KL against the pixel MSE.
    c.peak_flops = 0.0  # Peak FLOP/s per device for MFU (0 = look up the device kind).
    c.tensorboard = True  # Write TensorBoard event files under <workdir>/tensorboard.
    c.progress_bar = True  # A tqdm bar of the train steps (ETA, loss) on process 0's stderr.
    c.lora = _lora()
    return c


def _lora() -> ml_collections.ConfigDict:
    """LoRA on the world model's DiT (wow_jax/models/lora.py, docs/lora.md); rank 0 = off."""
    c = ml_collections.ConfigDict()
    c.rank = 0  # Adapter rank (0 = off: the DiT's own weights are trained).
    c.alpha = 4.0  # Adapter output scaled by alpha / rank (WoW/DiffSynth: rank 4, alpha 4).
    # Regex (re.search) on the DiT's dense-layer paths ('blocks/self_attn/q', 'blocks/ffn/fc1'):
    # q/k/v/o of self- and cross-attention and the FFN; add |k_img|v_img for the image attention.
    c.targets = r"(self_attn|cross_attn)/(q|k|v|o)$|ffn/fc[12]$"
    c.dropout = 0.0  # Dropout on the adapter's input in training.
    c.init = "kaiming"  # Init of A: 'kaiming' (peft's default) or 'gaussian' (std 1/rank); B = 0.
    c.param_dtype = "float32"  # Dtype of the adapters (the frozen base: model.dit.param_dtype).
    return c


def _idm_task() -> ml_collections.ConfigDict:
    """Task 'idm' (wow_jax/train/tasks/idm.py): frame pairs of the clips, targets, loss, flow."""
    c = ml_collections.ConfigDict()
    c.frame_gap = 1  # k: pairs (t, t+k) of each clip; target = mean of the k actions between.
    c.action_weights = ()  # Smooth-L1 weight per continuous action dim (() = all 1).
    c.smooth_l1_beta = 1.0  # Smooth-L1 switches from quadratic to linear at this error.
    c.gripper_weight = 1.0  # Weight of the gripper's binary cross-entropy in the loss.
    c.gripper_threshold = 0.5  # Raw gripper action above which it is 'closed' (Meta-World 0/1).
    c.flow_preset = "medium"  # OpenCV DIS optical-flow preset: 'ultrafast', 'fast', 'medium'.
    c.mask_threshold = 0.5  # Flow magnitude (pixels) above which a pixel is in the motion mask.
    c.cotrain = False  # Task 'world_model': also train the IDM in every step (own optimiser).
    c.cotrain_lr = 1e-3  # Co-training: the IDM optimiser's peak learning rate (run's schedule).
    c.baseline_flow_grid = 8  # Nearest-flow baseline: flow average-pooled to this grid (features).
    c.baseline_batches = 16  # Evaluation: training pair batches the mean and nearest-flow use.
    c.eval_batch = 64  # Evaluation and replay: frame pairs per IDM call.
    c.heldout_episodes = 4  # Evaluation: held-out Meta-World episodes per task (MAE and replay).
    c.heldout_seed_offset = 1000  # Evaluation: held-out collection seed = data.collect_seed + this.
    return c


def _act() -> ml_collections.ConfigDict:
    """Mode 'act' (wow_jax/act.py): imagine a clip (sample.*), read its actions with the IDM."""
    c = ml_collections.ConfigDict()
    c.idm_checkpoint = ""  # IDM run (or its checkpoint); its model.idm, idm.*, action_norm adopted.
    c.action_stats = ""  # action_stats.json de-normalising the IDM ('' = the IDM run's copy).
    c.pair_batch = 16  # Frame pairs the IDM reads per call (bounds its memory).
    return c


def _evaluate() -> ml_collections.ConfigDict:
    """Mode 'evaluate' and the demo's last stage (wow_jax/evaluate.py): closed-loop Meta-World."""
    c = ml_collections.ConfigDict()
    c.policies = ("imagine_act", "idm_replay", "expert", "random", "zero")  # Compared per seed.
    c.tasks = ()  # Meta-World tasks evaluated (() = data.tasks).
    c.episodes_per_task = 4  # Held-out episodes (reset seeds) per task.
    c.seed_offset = 2000  # Held-out reset seeds: the collection's scheme at collect_seed + this.
    c.max_steps = 0  # Env steps per episode before it counts as failed (0 = data.episode_length).
    c.execute_frames = 0  # Imagined frame steps executed before re-planning (0 = the whole clip).
    c.batch = 4  # Episodes run in lockstep; imagine-then-act imagines their clips in one batch.
    c.gif_episodes = 2  # Imagine-then-act episodes per task written as imagined|executed gifs.
    return c


def _sophia() -> ml_collections.ConfigDict:
    """Mode 'refine' (wow_jax/sophia/): critic-guided refinement of the prompt imagined from."""
    c = ml_collections.ConfigDict()
    c.critic = "offline"  # 'offline' (simulator + IDM signals) or 'chat' (a VLM endpoint).
    c.refiner = "offline"  # 'offline' (mixture-caption vocabulary) or 'chat' (the endpoint).
    c.candidates = 4  # Clips imagined per round (one sampler batch).
    c.rounds = 3  # Most rounds per start state; round 0 imagines the original instruction.
    c.threshold = 0.9  # Stop when the best normalised critic score reaches this (or 'completed').
    c.tasks = ()  # Meta-World tasks refined (() = evaluate.tasks, else data.tasks).
    c.episodes_per_task = 2  # Start states per task: the first held-out evaluation seeds.
    c.closed_loop = True  # Also run imagine-then-act with the original vs the refined prompts.
    c.base_url = ""  # Chat endpoint, e.g. http://127.0.0.1:8000/v1 ('' = $OPENAI_BASE_URL).
    c.model = ""  # Model the endpoint serves ('' = $OPENAI_MODEL).
    c.api_key = ""  # Endpoint key ('' = $OPENAI_API_KEY); never written to the workdir.
    c.timeout = 120.0  # Seconds per HTTP socket operation before an attempt counts as failed.
    c.retries = 3  # Further attempts after a failed request or an unusable answer.
    c.backoff = 1.0  # Seconds before the first retry, doubled for each next one.
    c.frames = 4  # Frames sampled evenly from a clip and sent to the chat critic.
    c.refiner_temperature = 0.7  # Sampling temperature of the chat refiner's rewrites.
    c.reward_scale = 10.0  # Offline physics: the env reward of a finished task (Meta-World v3: 10).
    c.psnr_range = (10.0, 30.0)  # Offline quality: PSNR (dB) mapped linearly to scores 1..5.
    return c


def _demo() -> ml_collections.ConfigDict:
    """Mode 'demo' (wow_jax/demo.py); train.steps / learning_rate are its world-model stage."""
    c = ml_collections.ConfigDict()
    c.clips = 64  # Training clips drawn from the collected episodes and cached.
    c.heldout = 4  # Held-out clips (other collection seed) imagined after training.
    c.vae_steps = 300  # Steps of the VAE stage.
    c.vae_lr = 1e-3  # Peak learning rate of the VAE stage.
    c.vae_frames = 0  # Frames of the VAE's training crops: 0 or data.num_frames (whole clip).
    c.vae_crop = 32  # Height/width of the VAE's training crops (0 = whole frames).
    c.idm_steps = 300  # Steps of the IDM stage (task 'idm' on the training episodes).
    c.idm_lr = 1e-3  # Peak learning rate of the IDM stage.
    return c


def _sample() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.solver = "unipc"  # 'unipc' (order 2, bh2) or 'euler'.
    c.steps = 50  # Denoising steps.
    c.guidance = 5.0  # Classifier-free guidance scale (>= 1).
    c.shift = 5.0  # Flow shift of the sigma schedule.
    c.sigma_grid = "diffusers"  # Sigmas: unipc 'diffusers'/'wan', euler 'diffusers'/'diffsynth'.
    c.timestep_dtype = "float32"  # DiT timestep input rounded to: 'float32' or 'bfloat16'.
    c.image_resize = "diffsynth"  # Conditioning frame prep: 'diffsynth' or 'wan' (frames.py).
    c.prompt = ""  # Instruction for a single generate job.
    c.negative_prompt = WAN_NEGATIVE_PROMPT  # Negative prompt for guidance (Wan2.1's).
    c.image = ""  # Conditioning frame path for a single image-to-video job.
    c.jobs = ""  # A jsonl file of jobs (image, prompt, seed) instead of image/prompt.
    c.seed = 0  # Noise seed.
    c.num_clips = 1  # Clips chained in a long-horizon rollout.
    c.batch_size = 1  # Jobs denoised together in one batch.
    c.image_mismatch = "resize"  # Image not data.height x width: 'resize' (warn) or 'error'.
    c.output_dir = ""  # Where generated files go ('' = <workdir>/generate); checked writable first.
    c.fps = 16  # Frame rate of the written mp4/gif (Wan2.1: 16).
    c.sheet_frames = 16  # Most frames shown in the contact-sheet png.
    c.params_key = "params"  # Checkpoint sub-tree read: 'params', or 'ema_params' (training EMA).
    c.param_dtype = ""  # Dtype generation holds the DiT and umT5 in, cast on read ('' = own).
    c.dit_checkpoint = ""  # Orbax DiT params (importer output) overriding checkpoint.init_from.
    c.vae_checkpoint = ""  # Orbax VAE params (importer output) overriding checkpoint.init_from.
    c.text_checkpoint = ""  # Orbax umT5 params (importer output) overriding checkpoint.init_from.
    c.clip_checkpoint = ""  # Orbax CLIP params (importer output) overriding checkpoint.init_from.
    c.lora_checkpoint = ""  # LoRA run whose adapters are merged into the DiT ('' = none).
    c.lora_scale = 1.0  # Scale of the merged adapters (0 = the base, 1 = as trained).
    c.lora_params_key = "params"  # Adapters read: 'params', or 'ema_params' (their EMA).
    return c


def _mesh() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = 1  # Data-parallel replicas.
    c.fsdp = -1  # Parameter/optimizer sharding (-1 = all remaining devices).
    c.tensor = 1  # Tensor (model) parallelism over heads and MLP.
    c.sequence = 1  # Sequence (context) parallelism over video tokens.
    c.rules = ()  # (logical axis, mesh axes) pairs replacing sharding.LOGICAL_RULES (() = those).
    return c


def _checkpoint() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.init_from = ""  # Orbax checkpoint (from training or the PyTorch importer) to start from.
    c.save_every = 500  # Steps between saves.
    c.keep = 3  # Most recent checkpoints kept.
    c.async_save = True  # Save in the background while training continues.
    c.keep_best = 1  # Checkpoints kept by lowest eval loss under <workdir>/best (0 = off).
    return c


def _convert() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.direction = "import"  # 'import' (PyTorch -> Orbax) or 'export' (Orbax -> PyTorch).
    c.component = "dit"  # 'dit', 'vae', 'text' (umT5), 'clip', 'dinov2'; 'lora' (export adapters).
    c.source = ""  # Import: file/folder/index.json/release folder; export: Orbax checkpoint.
    c.target = ""  # Output folder ('' = <workdir>/<component>_<orbax|wan|diffusers>).
    c.naming = "auto"  # 'wan' or 'diffusers' ('hf' = same for umT5/CLIP); 'auto': detect/diffusers.
    c.dtype = "bfloat16"  # Export dtype of floating tensors: 'bfloat16' or 'float32'.
    c.max_shard_size = "5GB"  # Export: largest safetensors shard (bytes or '500MB', '5GB').
    c.params_key = "params"  # Export: params sub-tree in the Orbax checkpoint ('ema_params' = EMA).
    c.overwrite = False  # Replace an existing target instead of refusing.
    c.overlay = "auto"  # Import: file loaded over source ('auto': its WoW_video_dit.pt; '': none).
    c.trust_pickle = False  # Import: allow .pth/.pt needing full unpickling (runs code from it).
    return c


def get_config() -> ml_collections.ConfigDict:
    """Returns the locked base config (Wan2.1-1.3B text-to-video sizes, small clips).

    wow_jax/configuration.py validates it at start-up: numeric ranges (NUMERIC_RANGES), choices
    and the relations between keys."""
    config = ml_collections.ConfigDict()
    # describe, train, generate, act, evaluate, refine, convert, merge (LoRA), demo.
    config.mode = "describe"
    config.seed = 0  # Seed for parameter init and training randomness.
    config.model = ml_collections.ConfigDict()
    # CPU-only kernels (docs/cpu.md): 'auto' (on when the programs compile for CPU), 'on', 'off';
    # configuration.resolve_kernels writes the choice into model.dit/vae.cpu_kernels.
    config.model.cpu_kernels = "auto"
    config.model.dit = _dit()
    config.model.vae = _vae()
    config.model.text = _text()
    config.model.clip = _clip()
    config.model.dinov2 = _dinov2()
    config.model.idm = _idm()
    config.data = _data()
    config.train = _train()
    config.sample = _sample()
    config.mesh = _mesh()
    config.checkpoint = _checkpoint()
    config.convert = _convert()
    config.demo = _demo()
    config.idm = _idm_task()
    config.act = _act()
    config.evaluate = _evaluate()
    config.sophia = _sophia()
    config.lock()
    return config
