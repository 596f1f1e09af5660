"""Tool calling on the engine side.

- parsers.py: how calls are read out of the answer (the output pipeline runs them after the reasoning
  parser), one parser per model format (`mistral`, `hermes`);
- validation.py: what a request may ask of a model (`validate_tools`) and whether its calls are read
  (`calls_tools`);
- constraints.py: tool_choice `required` and named, enforced by a grammar in the model's format.

How tools and earlier calls reach the model's chat template is prompt.py's part.
"""
