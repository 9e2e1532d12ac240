"""The lee family: influence dynamics in context and the Bayesian influence function (Lee et al. 2025)."""
