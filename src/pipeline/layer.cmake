# The pipeline finds composed recipes and `llmopt init` templates in the source tree's configs/
# when they are not beside the recipe or in ./configs.
target_compile_definitions(llmopt_pipeline PRIVATE LLMOPT_CONFIGS_DIR="${PROJECT_SOURCE_DIR}/configs")
