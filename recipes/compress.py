"""Compress a fine-tuned model and report what it costs: the same as the `hfopt compress` command.

    python recipes/compress.py outputs/finetune_bert --eval_file recipes/data/sentiment/validation.csv \
        --prune_magnitude 0.5 --quantize dynamic_int8 --quantize_embeddings --output_dir outputs/compressed
    python recipes/compress.py --config recipes/pipelines/sst2_chain.yaml          # a whole pipeline from YAML

The stages run in one declared order (hfopt.pipeline.ORDER): student → prune_vocabulary → share_layers →
prune_heads → prune_ffn → recover → prune_magnitude → qat → quantize → onnx. Writes OUT/model (load it with
hfopt.compression.load_compressed), OUT/stages/ (every stage: a rerun resumes and reuses them),
OUT/compression_report.{json,md,png}.
"""

import sys

from hfopt.commands.compress import main

if __name__ == "__main__":
    sys.exit(main())
