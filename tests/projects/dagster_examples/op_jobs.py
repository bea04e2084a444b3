# Dagster's documented op-job and graph examples (concepts/ops-jobs-graphs: op-jobs, graphs,
# nesting-graphs, dynamic-graphs); only the import line changed. The helpers the dynamic-graphs
# page leaves to the reader (load_big_data, expensive_processing, analyze) are defined at the end.
import tidegate as dg


# op-jobs: "Using the @job decorator"
@dg.op
def return_five():
    return 5


@dg.op
def add_one(arg):
    return arg + 1


@dg.job
def do_stuff():
    add_one(return_five())


# op-jobs: "From a graph", with config
@dg.op(config_schema={"n": float})
def do_something(context: dg.OpExecutionContext):
    context.log.info("config_param: " + str(context.op_config["n"]))
    return context.op_config["n"]


@dg.graph
def do_it_all():
    do_something()


do_it_all_job = do_it_all.to_job(config={"ops": {"do_something": {"config": {"n": 2}}}})


# graphs: a single output passed to several inputs
@dg.op
def return_one(context: dg.OpExecutionContext) -> int:
    return 1


@dg.op
def add_one_to(context: dg.OpExecutionContext, number: int):
    return number + 1


@dg.op
def adder(context: dg.OpExecutionContext, a: int, b: int) -> int:
    return a + b


@dg.graph
def inputs_and_outputs():
    value = return_one()
    a = add_one_to(value)
    b = add_one_to(value)
    adder(a, b)


# graphs: conditional branching with optional outputs
@dg.op(out={"branch_1": dg.Out(is_required=False), "branch_2": dg.Out(is_required=False)})
def branching_op():
    num = 0  # the docs draw it at random; fixed so the test knows which branch runs
    if num == 0:
        yield dg.Output(1, "branch_1")
    else:
        yield dg.Output(2, "branch_2")


@dg.op
def branch_1_op(_input):
    pass


@dg.op
def branch_2_op(_input):
    pass


@dg.graph
def branching():
    branch_1, branch_2 = branching_op()
    branch_1_op(branch_1)
    branch_2_op(branch_2)


# nesting-graphs
@dg.op
def return_fifty():
    return 50.0


@dg.op
def add_thirty_two(number):
    return number + 32.0


@dg.op
def multiply_by_one_point_eight(number):
    return number * 1.8


@dg.op
def log_number(context: dg.OpExecutionContext, number):
    context.log.info(f"number: {number}")


@dg.job
def all_together_unnested():
    log_number(add_thirty_two(multiply_by_one_point_eight(return_fifty())))


@dg.graph
def celsius_to_fahrenheit(number):
    return add_thirty_two(multiply_by_one_point_eight(number))


@dg.job
def all_together_nested():
    log_number(celsius_to_fahrenheit(return_fifty()))


# dynamic-graphs: "A dynamic job"
@dg.op(out=dg.DynamicOut())
def load_pieces():
    large_data = load_big_data()
    for idx, piece in large_data.chunk():
        yield dg.DynamicOutput(piece, mapping_key=idx)


@dg.op
def compute_piece(piece):
    return expensive_processing(piece)


@dg.op
def merge_and_analyze(pieces):
    return analyze(pieces)


@dg.job
def dynamic_graph():
    pieces = load_pieces()
    results = pieces.map(compute_piece)
    merge_and_analyze(results.collect())


class BigData:
    def __init__(self, values):
        self.values = values

    def chunk(self):
        return [(f"piece_{i}", self.values[i : i + 2]) for i in range(0, len(self.values), 2)]


def load_big_data():
    return BigData(list(range(10)))


def expensive_processing(piece):
    return sum(piece)


def analyze(results):
    return sum(results)


defs = dg.Definitions(
    jobs=[
        do_stuff,
        do_it_all_job,
        inputs_and_outputs.to_job(),
        branching.to_job(),
        all_together_unnested,
        all_together_nested,
        dynamic_graph,
    ]
)
