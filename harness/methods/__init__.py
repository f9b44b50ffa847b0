"""The methods. Adding one = a file in this folder + one registration line below.

Each entry is a :class:`harness.methods.base.Method` subclass; ``METHODS.get(name)(**params)`` builds one.
"""

from harness.plugins import METHODS

METHODS.register("closed-book", "harness.methods.closed_book:ClosedBook")
METHODS.register("concat", "harness.methods.concat:Concat")
METHODS.register("prompt", "harness.methods.prompt:Prompt")
METHODS.register("prompt-chat", "harness.methods.prompt_chat:PromptChat")
METHODS.register("prompt-fewshot", "harness.methods.prompt_fewshot:PromptFewshot")
METHODS.register("spring", "harness.methods.spring:Spring")
METHODS.register("lora", "harness.methods.lora:Lora")
METHODS.register("spring-plus", "harness.methods.spring_plus:SpringPlus")
METHODS.register("prefix", "harness.methods.prefix:Prefix")
