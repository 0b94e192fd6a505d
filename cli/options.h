// cxxopts as every clipguide program includes it. A repeatable option's value is taken whole, exactly as the
// shell passed it: cxxopts would otherwise split every std::vector option at commas, turning the prompt
// "a castle on a hill, oil painting" into two prompts and a file name with a comma into two files. The only
// separators are the documented ones, inside one value (`|` between generate's prompts, `:` before a weight).
#pragma once

#ifdef CXXOPTS_HPP_INCLUDED
#error "include cli/options.h instead of <cxxopts.hpp>: it sets how repeatable options are split"
#endif
// A command-line argument cannot hold a NUL byte, so no value is ever split.
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>
