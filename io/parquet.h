// Parquet files of text columns, through Apache Arrow's own C++ library (the libarrow and libparquet that
// pyarrow's wheel carries, found in .venv/ when clipguide is configured): the metadata of the search index's
// partitions (clip-retrieval's metadata_N.parquet), which pyarrow, pandas and Spark read.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace clipguide {

// False when this build was configured without Arrow; the functions below then throw an Error saying so.
bool parquet_available();

// Writes one row group of UTF-8 string columns (name, values; every column as long as the first) to `path`,
// replacing it. Callers that need the file to appear whole write a temporary name and rename it.
void write_parquet_strings(const std::string& path,
                           const std::vector<std::pair<std::string, std::vector<std::string>>>& columns);

// The string column `column` of a Parquet file, every row group in order. A missing column, another type or a
// file that is not Parquet is an Error naming the file.
std::vector<std::string> read_parquet_strings(const std::string& path, const std::string& column);

}  // namespace clipguide
