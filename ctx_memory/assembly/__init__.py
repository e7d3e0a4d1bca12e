"""The parts of a token-budgeted prompt, each in its own module and none touching a store.

:class:`~ctx_memory.prompt.ContextPromptAssembler` (the Runnable) reads the session
through the manager's public API and hands what it read to these, in order:

- :mod:`ctx_memory.assembly.plan`: one assembly's steps, from the header to the
  finished prompt (:func:`~ctx_memory.assembly.plan.begin_prompt`,
  :func:`~ctx_memory.assembly.plan.plan_prompt`,
  :func:`~ctx_memory.assembly.plan.finish_prompt`);
- :mod:`ctx_memory.assembly.sources`: the session header and the numbered sources, cut
  to the system message's share of the budget (ranking is :mod:`ctx_memory.ranking`);
- :mod:`ctx_memory.assembly.window`: the history window (newest whole turns that fit,
  tool calls kept with their results) and the two short loops that read it, sync and
  async;
- :mod:`ctx_memory.assembly.messages`: stored records as LangChain messages, fast;
- :mod:`ctx_memory.assembly.options`: the assembler's options, checked when it is made;
- :mod:`ctx_memory.assembly.report`: what an assembly gives back
  (:class:`~ctx_memory.assembly.report.AssembledPrompt`,
  :class:`~ctx_memory.assembly.report.AssemblyReport`).

The layering runs one way: these modules import the core (:mod:`ctx_memory.schema`,
:mod:`ctx_memory.tokens`, :mod:`ctx_memory.ranking`), never the adapters built on them
(:mod:`ctx_memory.prompt`, :mod:`ctx_memory.chat`, :mod:`ctx_memory.middleware`).
"""

from __future__ import annotations

__all__: list[str] = []
