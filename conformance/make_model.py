"""Builds the tiny random-weight model the conformance tests serve with vLLM.

A Llama of 2 layers (hidden 128, 4 heads, intermediate 512, 32k positions, bf16) around the test
tokenizer in testdata/tokenizers/deepseek-v4: nothing is downloaded, and vLLM counts prompt tokens
with the same tokenizer the client builds them with. The weights are random (seeded), so the text
is nonsense; only timing, token counts and the wire format matter.

    python make_model.py OUT_DIR TOKENIZER_DIR
"""

import gzip
import json
import shutil
import sys
from pathlib import Path

# The chat template renders the messages' text alone, so a chat prompt counts exactly the tokens
# of its content, as a completion prompt does.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def main(out: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(tokenizer_dir / "tokenizer.json.gz", "rb") as f:
        raw = f.read()
    (out / "tokenizer.json").write_bytes(raw)
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(tokenizer_dir / "NOTICE.md", out / "TOKENIZER_NOTICE.md")

    tokenizer = json.loads(raw)
    ids = list(tokenizer["model"]["vocab"].values())
    ids += [t["id"] for t in tokenizer.get("added_tokens", [])]
    torch.manual_seed(0)
    model_config = LlamaConfig(
        vocab_size=max(ids) + 1,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32768,
        torch_dtype="bfloat16",
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(model_config).to(torch.bfloat16).save_pretrained(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
