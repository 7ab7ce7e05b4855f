"""The agent's side of the fleet: enrolment with a coordinator, signed jobs it accepts, records it delivers."""
