mod fake_api_dance;
mod fake_api_vectors;
mod support;
