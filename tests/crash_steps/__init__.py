"""Steps that kill or outlive their worker; only the crash tests' own workers consume them."""
