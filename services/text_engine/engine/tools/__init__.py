"""Tool calling on the engine side: how calls are read from the answer, and how required/named tool
choices are enforced."""
