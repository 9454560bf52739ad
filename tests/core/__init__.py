"""The pure core: outcomes, money, fields, storable values, eligibility, ranking, classify."""
