//! Route policy (issue 6): the model, sets, compile and eval live here; nothing yet.
