"""Tiny randomly initialised transformers models built from configs (no downloads)."""

import torch

VOCAB = 256
VISION_START, VISION_END, IMAGE_TOKEN, VIDEO_TOKEN = 250, 251, 252, 253


def tiny_llama(head_dim=32, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=4 * head_dim, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(config).eval()


def tiny_qwen2vl(head_dim=32, seed=0):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]  # M-RoPE sections sum to head_dim / 2
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=4 * head_dim, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         bos_token_id=0, eos_token_id=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=4 * head_dim, num_heads=2, mlp_ratio=2),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
    )
    return Qwen2VLForConditionalGeneration(config).eval()


def video_inputs(frames=4, height=56, width=56, text_tokens=40, seed=0):
    """input_ids with one video (grid t=frames/2, h=height/14, w=width/14) between text tokens."""
    gen = torch.Generator().manual_seed(seed)
    t, h, w = frames // 2, height // 14, width // 14
    patches = torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=gen)
    n_video = t * h * w // 4
    before = torch.randint(0, 200, (text_tokens // 2,), generator=gen)
    after = torch.randint(0, 200, (text_tokens - text_tokens // 2,), generator=gen)
    ids = torch.cat([before, torch.tensor([VISION_START]), torch.full((n_video,), VIDEO_TOKEN),
                     torch.tensor([VISION_END]), after])[None]
    mm_token_type_ids = (ids == VIDEO_TOKEN).long() * 2  # 0 text, 2 video (as the processor marks them)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values_videos": patches,
            "video_grid_thw": torch.tensor([[t, h, w]]), "mm_token_type_ids": mm_token_type_ids}
