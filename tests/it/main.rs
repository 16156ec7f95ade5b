mod fake_api_vectors;
mod support;
