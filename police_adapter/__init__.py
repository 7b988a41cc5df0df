"""The population database adapter of the Ministry of Public Security.

PIN allocation and citizen records, served as lienthong.population.v1.CitizenService.
"""
