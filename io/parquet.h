// Parquet files, through Apache Arrow's own C++ library (the libarrow and libparquet that
// pyarrow's wheel carries, found in .venv/ when clipguide is configured): the metadata of the search index's
// partitions (clip-retrieval's metadata_N.parquet) and score workers' partitions, which pyarrow, pandas and
// Spark read.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace clipguide {

// False when this build was configured without Arrow; the functions below then throw an Error saying so.
bool parquet_available();

// A column: its name and its values, UTF-8 strings, doubles or 64-bit integers.
struct ParquetColumn {
  std::string name;
  std::variant<std::vector<std::string>, std::vector<double>, std::vector<int64_t>> values;
};

// Writes the columns (every one as long as the first) as one row group to `path`, replacing it. Callers that
// need the file to appear whole write a temporary name and rename it.
void write_parquet(const std::string& path, const std::vector<ParquetColumn>& columns);

// The string column `column` of a Parquet file, every row group in order. A missing column, another type or a
// file that is not Parquet is an Error naming the file.
std::vector<std::string> read_parquet_strings(const std::string& path, const std::string& column);

}  // namespace clipguide
