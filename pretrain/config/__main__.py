from .reference import reference_table

print(reference_table())
