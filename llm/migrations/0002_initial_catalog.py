from django.db import migrations


def load_catalog(apps, schema_editor):
    from llm.catalog import INITIAL_MODELS

    ModelConfig = apps.get_model("llm", "ModelConfig")
    for model_id, name, window, max_output, structured in INITIAL_MODELS:
        ModelConfig.objects.update_or_create(
            id=model_id,
            defaults={
                "display_name": name,
                "context_window": window,
                "max_output_tokens": max_output,
                "supports_structured_output": structured,
                "is_active": True,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("llm", "0001_initial")]

    operations = [migrations.RunPython(load_catalog, migrations.RunPython.noop)]
