"""Fine-tuning pretrained EnBERT / Enigma models on labelled sequences, and predicting with the result.

    from enigma_fast.finetune import FinetuneConfig, finetune, load_finetuned, predict

    cfg = FinetuneConfig(model="runs/tiny/final", train="train.csv", valid="valid.csv", test="test.csv",
                         task="classification", mode="lora")
    metrics = finetune(cfg, "ft/run1")               # the run folder is also the fine-tuned model folder
    model = load_finetuned("ft/run1")
    p = predict(model, ["ACGT..."]).probs            # (N, C)

Pieces: ``data`` (CSV/TSV/FASTA with labels, batches), ``heads`` (``SequenceClassifier``, ``TokenClassifier``),
``lora`` (adapters through peft, an optional dependency), ``folder`` (the fine-tuned folder format,
``load_finetuned``), ``trainer`` (the loop), ``metrics``, ``predict``, ``benchmark`` (labelled tasks from the
shipped genome) and ``baselines`` (k-mer logistic regression, a small CNN). The CLIs are ``python -m
enigma_fast.finetune`` and ``python -m enigma_fast.predict``.
"""

from enigma_fast.finetune.config import FinetuneConfig
from enigma_fast.finetune.data import TASKS, read_labelled
from enigma_fast.finetune.folder import FinetuneSpec, load_finetuned, save_finetuned
from enigma_fast.finetune.heads import SequenceClassifier, TokenClassifier
from enigma_fast.finetune.metrics import classification_metrics, regression_metrics
from enigma_fast.finetune.predict import Predictions, predict
from enigma_fast.finetune.trainer import finetune

__all__ = [
    "TASKS",
    "FinetuneConfig",
    "FinetuneSpec",
    "Predictions",
    "SequenceClassifier",
    "TokenClassifier",
    "classification_metrics",
    "finetune",
    "load_finetuned",
    "predict",
    "read_labelled",
    "regression_metrics",
    "save_finetuned",
]
