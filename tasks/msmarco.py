"""MS MARCO (QA), dev split. Hub-only: no local copy with query text and answers exists (see MANIFEST.md)."""

from harness.task import HubSource, Task


class MSMarco(Task):
    name = "msmarco"
    title = "MS MARCO (QA)"
    eval_split = "dev"
    hub = HubSource("msmarco-qa", eval_split="dev", train_split="train")
    license = "MS MARCO terms (non-commercial research)"
