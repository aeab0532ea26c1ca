# ctest helper: run EXE with ARGS (one string, split like a shell command line), print its
# output, and fail unless it exits with EXPECT_RC and (when given) its stdout + stderr match
# the regular expression EXPECT_REGEX. Usage:
#   cmake -DEXE=path -DARGS="--quick --lr 1e4" -DEXPECT_RC=3 -DEXPECT_REGEX=... -P expect_run.cmake
separate_arguments(arg_list UNIX_COMMAND "${ARGS}")
execute_process(COMMAND "${EXE}" ${arg_list} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
message("${out}${err}")
if(NOT "${rc}" STREQUAL "${EXPECT_RC}")
  message(FATAL_ERROR "expected exit status ${EXPECT_RC}, got ${rc}")
endif()
if(DEFINED EXPECT_REGEX AND NOT "${out}${err}" MATCHES "${EXPECT_REGEX}")
  message(FATAL_ERROR "output does not match: ${EXPECT_REGEX}")
endif()
