# ctest script: build net/handler_fuzz with clang (ASan, UBSan, libFuzzer)
# in WORK_DIR, then fuzz for SECONDS from a scratch copy of the seed corpus
# (libFuzzer adds what it finds to its corpus directory; the sources stay
# untouched). Fails on any crash, sanitizer report, hang or bad response.
include(${CMAKE_CURRENT_LIST_DIR}/run_checked.cmake)
if(NOT EXISTS ${WORK_DIR}/build.ninja)
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR} -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
      -DCMAKE_CXX_COMPILER=${CLANGXX} -DKVSTORE_FUZZ=ON -DKVSTORE_BUILD_TESTS=OFF
      -DKVSTORE_BUILD_BENCH=OFF)
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR} --target handler_fuzz)
file(REMOVE_RECURSE ${WORK_DIR}/corpus)
file(COPY ${SOURCE_DIR}/net/fuzz_corpus/ DESTINATION ${WORK_DIR}/corpus)
run(${WORK_DIR}/net/handler_fuzz -max_total_time=${SECONDS} -timeout=10 -max_len=4096
    -print_final_stats=1 ${WORK_DIR}/corpus)
string(REGEX MATCH "stat::number_of_executed_units: *[0-9]+" runs "${last_output}")
message("${runs}")
