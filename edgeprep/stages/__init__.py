"""Pipeline stages. Each is a function from artifacts (and typed statistics) to new artifacts or measurements."""
