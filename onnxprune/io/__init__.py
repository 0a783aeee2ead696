"""Reading and writing models: protobuf scanning, the Model, spilling, staging, atomic files, shapes."""
