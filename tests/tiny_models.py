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


def tiny_family(model_type: str, head_dim: int = 32, seed: int = 0):
    """A tiny random model of a Qwen video family (Qwen3-VL, Qwen3.5, ...) whose special-token ids are
    the offline byte-level tokenizer's (videoqa.offline), so the pipeline's offline processor drives it.
    Returns ``(model, processor)``; the processor has the family's layout and patch geometry."""
    import transformers

    from videoqa.models.families import family
    from videoqa.offline import offline_tokenizer
    from videoqa.processor import VideoQAProcessor

    fam = family(model_type)
    tok = offline_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>", "<|im_end|>")}
    hidden = 4 * head_dim
    text = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=8192,
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|im_end|>"])
    vision = dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=hidden,
                  patch_size=fam.spec.patch_size, spatial_merge_size=2, temporal_patch_size=2)
    if model_type.startswith("qwen2"):
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5]}
        vision = dict(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2)
        if model_type == "qwen2_5_vl":
            vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                          fullatt_block_indexes=[0], window_size=56)
    elif model_type.startswith("qwen3_vl"):
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5],
                                   "mrope_interleaved": True}
        vision.update(deepstack_visual_indexes=[0], num_position_embeddings=64)
    elif model_type.startswith("qwen3_5"):
        text.update(num_hidden_layers=4, layer_types=["linear_attention", "full_attention"] * 2,
                    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                     "mrope_section": [2, 1, 1], "mrope_interleaved": True})
        vision.update(num_position_embeddings=64)
    if model_type.endswith("_moe"):
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    config_cls = transformers.AutoConfig.for_model(model_type).__class__
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model = getattr(transformers, fam.class_name)(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|im_end|>"]
    return model, VideoQAProcessor(tok, fam.spec, None, None, fam.layout)
