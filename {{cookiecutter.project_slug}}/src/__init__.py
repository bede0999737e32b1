"""Fine-tune a Hugging Face text classifier, then serve it as a REST API."""
