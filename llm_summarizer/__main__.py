from llm_summarizer.app import main

main()
