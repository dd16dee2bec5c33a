-- Dashboard view: the funnel, sessions and shoppers per step.
SELECT * FROM funnel_steps
