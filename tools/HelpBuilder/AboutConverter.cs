// Turns docs/about/about_*.md into the plain-text about_*.help.txt files Get-Help reads:
// "# about_X" → TOPIC, "## Heading" → HEADING in capitals, text indented four spaces and
// wrapped at 80 columns, code indented eight.
using System.Text;
using Markdig;
using Markdig.Extensions.Yaml;
using Markdig.Syntax;

namespace QubesFirewall.HelpBuilder;

public static class AboutConverter
{
    const int Width = 80;
    const string Indent = "    ";

    static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder().UseYamlFrontMatter().Build();

    public static string ToText(string markdown)
    {
        var sb = new StringBuilder();
        var afterHeading = false;
        foreach (var block in Markdown.Parse(markdown, Pipeline))
        {
            if (block is not (YamlFrontMatterBlock or HtmlBlock or LinkReferenceDefinitionGroup or ThematicBreakBlock))
            {
                // Text sits right under its heading; blocks are otherwise separated by a blank line.
                if (sb.Length > 0 && (block is HeadingBlock || !afterHeading)) sb.Append('\n');
                afterHeading = block is HeadingBlock;
            }
            switch (block)
            {
                case YamlFrontMatterBlock or HtmlBlock or LinkReferenceDefinitionGroup or ThematicBreakBlock:
                    break;
                case HeadingBlock { Level: 1 } h:
                    sb.Append("TOPIC\n").Append(Indent).Append(CmdletDocParser.InlineText(h.Inline)).Append('\n');
                    break;
                case HeadingBlock { Level: 2 } h:
                    sb.Append(CmdletDocParser.InlineText(h.Inline).ToUpperInvariant()).Append('\n');
                    break;
                case HeadingBlock h:
                    sb.Append(Indent).Append(CmdletDocParser.InlineText(h.Inline)).Append('\n');
                    break;
                case FencedCodeBlock or CodeBlock:
                    foreach (var line in ((LeafBlock)block).Lines.ToString().TrimEnd().Split('\n'))
                        sb.Append(line.Length == 0 ? "" : Indent + Indent + line.TrimEnd('\r')).Append('\n');
                    break;
                case ListBlock list:
                    var n = 0;
                    foreach (var item in list.OfType<ListItemBlock>())
                    {
                        var bullet = list.IsOrdered ? $"{++n}. " : "- ";
                        var text = string.Join(" ", item.Select(CmdletDocParser.BlockText));
                        Wrap(sb, text, Indent + bullet, Indent + new string(' ', bullet.Length));
                    }
                    break;
                default:
                    foreach (var para in CmdletDocParser.BlockText(block).Split('\n'))
                        Wrap(sb, para, Indent, Indent);
                    break;
            }
        }
        return sb.ToString();
    }

    /// <summary>Converts one file; returns the name of the written .help.txt.</summary>
    public static string ConvertFile(string markdownPath, string outDir)
    {
        var name = Path.GetFileNameWithoutExtension(markdownPath) + ".help.txt";
        var target = Path.Combine(outDir, name);
        File.WriteAllText(target, ToText(File.ReadAllText(markdownPath)), new UTF8Encoding(false));
        return target;
    }

    static void Wrap(StringBuilder sb, string text, string firstPrefix, string restPrefix)
    {
        var line = new StringBuilder(firstPrefix);
        var empty = true;
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!empty && line.Length + 1 + word.Length > Width)
            {
                sb.Append(line).Append('\n');
                line.Clear().Append(restPrefix);
                empty = true;
            }
            if (!empty) line.Append(' ');
            line.Append(word);
            empty = false;
        }
        sb.Append(line).Append('\n');
    }
}
