"""The encode flow: inputs, preprocessing, dedupe, tokenizing, batching, stream, pooling, output."""
