// GoogleTest main for tests run under mpirun: every rank runs every test; only rank 0 prints.
// A failure on any rank makes that rank exit non-zero, so mpirun's exit code is non-zero too.
#include <gtest/gtest.h>
#include <mpi.h>

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank != 0) {
        auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
        delete listeners.Release(listeners.default_result_printer());
    }
    const int rc = RUN_ALL_TESTS();
    int any = rc != 0, total = 0;
    MPI_Allreduce(&any, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0 && total > 0) std::fprintf(stderr, "%d rank(s) had failing tests\n", total);
    MPI_Finalize();
    return total > 0 ? 1 : 0;
}
