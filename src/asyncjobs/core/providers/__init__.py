"""LLM providers behind one small interface (base.Provider), one module per wire format."""
