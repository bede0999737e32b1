"""Fine-tune a Hugging Face model on your data, then serve it: the shared core and this project's task (src/task/)."""
