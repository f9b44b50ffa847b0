"""The QA datasets. Adding one = a file in this folder + one registration line below."""

from harness.plugins import DATASETS

# The paper's 12, in its table order, then the two extra sets.
DATASETS.register("triviaqa", "tasks.triviaqa:TriviaQA")
DATASETS.register("nq", "tasks.nq:NaturalQuestions")
DATASETS.register("hotpotqa", "tasks.hotpotqa:HotpotQA")
DATASETS.register("squad", "tasks.squad:SQuAD")
DATASETS.register("webq", "tasks.webq:WebQuestions")
DATASETS.register("2wiki", "tasks.twowiki:TwoWikiMultihopQA")
DATASETS.register("coqa", "tasks.coqa:CoQA")
DATASETS.register("msmarco", "tasks.msmarco:MSMarco")
DATASETS.register("popqa", "tasks.popqa:PopQA")
DATASETS.register("fermi", "tasks.fermi:Fermi")
DATASETS.register("musique", "tasks.musique:MuSiQue")
DATASETS.register("bamboogle", "tasks.bamboogle:Bamboogle")
DATASETS.register("curatedtrec", "tasks.curatedtrec:CuratedTREC")
DATASETS.register("strategyqa", "tasks.strategyqa:StrategyQA")
