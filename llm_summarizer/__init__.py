"""llm_summarizer: an analysis service that writes a source's summary with an LLM.

It speaks SkyPortal's analysis-service protocol (``POST /summarize``, port 7003): it answers
``pending`` at once, asks an OpenAI-compatible chat API for a summary of the source's
comments, classifications and redshift, and POSTs the result to the callback URL. Like the SN
fitter it stands alone: HTTP and the LLM API only, no database, bus or secret key.
"""
